"""``papers plots [REV ...]``: ``dvc plots diff`` as a page that opens offline.

DVC's default HTML loads Vega, Vega-Lite and Vega-Embed from a CDN, so offline it is a blank page. Here
DVC renders into an HTML template whose head inlines those libraries, bundled by the ``vl-convert-python``
package (no network, nothing vendored into the repository). The template is generated on first use into
``scratch/plots/`` (git-ignored) and regenerated when the bundled library versions change.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from shared import paths

TEMPLATE = """<!DOCTYPE html>
<html>
<head>
<meta charset="utf-8">
<title>DVC plots (offline: Vega {vega}, Vega-Lite {vegalite}, Vega-Embed {embed}, inlined)</title>
<script type="text/javascript">
{bundle}
</script>
<style>table {{ border-spacing: 15px; }} body {{ font-family: sans-serif; }}</style>
</head>
<body>
{{plot_divs}}
</body>
</html>
"""


def template_path() -> Path:
    return paths.repo_root() / "scratch" / "plots" / "template.html"


def build_template() -> str:
    """The HTML template with the Vega libraries inlined (a classic script that defines ``vegaEmbed``)."""
    import vl_convert as vlc

    versions = dict(vega=vlc.get_vega_version(), vegalite=vlc.get_vegalite_versions()[-1],
                    embed=vlc.get_vega_embed_version())
    bundle = vlc.javascript_bundle()
    if "{plot_divs}" in bundle or "</script" in bundle:
        raise RuntimeError("the Vega bundle cannot be inlined safely (it contains a template placeholder)")
    return TEMPLATE.format(bundle=bundle, **versions)


def ensure_template() -> Path:
    path = template_path()
    text = build_template()
    if not path.exists() or path.read_text() != text:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return path


def render(revisions: list[str], out_dir: Path) -> Path:
    """Run ``dvc plots diff REVISIONS`` into ``out_dir`` with the offline template; return the page."""
    dvc = Path(sys.executable).with_name("dvc")
    cmd = [str(dvc) if dvc.exists() else "dvc", "plots", "diff", *revisions, "--html-template",
           str(ensure_template()), "-o", str(out_dir)]
    res = subprocess.run(cmd, cwd=paths.repo_root(), capture_output=True, text=True)
    if res.returncode != 0:
        raise RuntimeError((res.stderr or res.stdout).strip().splitlines()[-1] if (res.stderr or res.stdout)
                           else f"dvc plots diff exited with {res.returncode}")
    return out_dir / "index.html"
