"""The ``papers`` command: list, run, new, report.

    papers list                          every paper, its fidelity grade, last verdicts and runtime
    papers run SLUG [--profile P] [--set key=value ...] [--device D] [--out DIR]
    papers check SLUG [--profile P] [--set ...]   validate parameters only (no compute)
    papers new SLUG --title T --url U    scaffold a paper from the template
    papers deps SLUG [--write]           the code a paper's stage depends on (and update dvc.yaml)
    papers fetch NAME                    fetch and verify a dataset into data/NAME (a data_NAME stage)
    papers build-smollm2                 dequantise the SmolLM2 GGUF into data/smollm2 (stage data_smollm2)
    papers report [--check]              regenerate (or check) the results tables in the READMEs
    papers prereg [SLUG ...]             per claim: registered in which commit, before its first results?
    papers diff [A] [B] [--paper SLUG]   claims whose verdict, value or interval changed from A to B
                                         (default: the last commit vs the working tree), and changed params
    papers plots [REV ...] [-o DIR]      `dvc plots diff` as an HTML page that works offline
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from shared import paths
from shared.params import PROFILES, ParamError, parse_set_options, profile_overrides
from shared.scaffold import ScaffoldError


def _paper_info(slug: str) -> dict[str, str]:
    from shared.papermeta import read_meta

    return read_meta(slug)


def _load_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def cmd_list(args: argparse.Namespace) -> int:
    from shared.report import budget_status

    rows = [("paper", "grade", "profile", "verdicts", "wall time")]
    for slug in paths.list_papers():
        meta = _paper_info(slug)
        metrics = _load_json(paths.results_dir(slug) / "metrics.json")
        runtime = _load_json(paths.results_dir(slug) / "runtime.json")
        if metrics:
            counts = {}
            for c in metrics["claims"]:
                counts[c["verdict"]] = counts.get(c["verdict"], 0) + 1
            verdicts = ", ".join(f"{n} {v}" for v, n in sorted(counts.items()))
            profile = metrics["profile"]
        else:
            verdicts, profile = "(not run)", "-"
        wall = "-"
        if runtime and metrics:
            note = budget_status(slug, metrics["profile"], metrics["device"], runtime["wall_time_s"])[1]
            wall = f"{runtime['wall_time_s']:.0f} s{' (over budget)' if note else ''}"
        rows.append((slug, meta.get("grade", "?"), profile, verdicts, wall))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for i, row in enumerate(rows):
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
        if i == 0:
            print("  ".join("-" * w for w in widths))
    return 0


def cmd_summary(args: argparse.Namespace) -> int:
    """Each paper's claims and verdicts, one line per claim, and the tally (what `make repro` prints)."""
    from shared.report import budget_status, is_close_call, summary_line

    everything = []
    for slug in paths.list_papers():
        metrics = _load_json(paths.results_dir(slug) / "metrics.json")
        if not metrics or metrics.get("schema_version") != 2:
            print(f"{slug}: not run" if not metrics else f"{slug}: results of an old schema; rerun it")
            continue
        runtime = _load_json(paths.results_dir(slug) / "runtime.json") or {}
        wall = ""
        if "wall_time_s" in runtime:
            note = budget_status(slug, metrics["profile"], metrics["device"], runtime["wall_time_s"])[1]
            wall = f", {runtime['wall_time_s']:.0f} s{', ' + note if note else ''}"
        smoke = "  (smoke run: verdicts not meaningful)" if metrics["profile"] == "smoke" else ""
        print(f"{slug} [{metrics['profile']}, {metrics['device']}{wall}]{smoke}")
        for c in metrics["claims"]:
            everything.append(c)
            m = c["measured"]
            ci = ""
            if m["ci_low"] is not None and m["ci_high"] is not None:
                ci = f" [{m['ci_low']:.3g}, {m['ci_high']:.3g}]"
            value = "n/a" if m["value"] is None else f"{m['value']:.3g}"
            gate = {None: "", True: "", False: "  (gate failed)"}[c["gate"]["passed"]]
            ctrl = "  (control meets the criterion)" if c["control"]["meets_criterion"] else ""
            close = "  (close call)" if is_close_call(c) else ""
            print(f"  {c['verdict']:<15} {c['kind']:<11} {c['id']}: {value}{ci}{gate}{ctrl}{close}")
    if everything:
        print(summary_line(everything))
    return 0


def _print_table(rows: list[tuple[str, ...]]) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for i, row in enumerate(rows):
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
        if i == 0:
            print("  ".join("-" * w for w in widths))


def cmd_prereg(args: argparse.Namespace) -> int:
    """Per claim: the commit that registered it, its first committed results, and whether it was
    pre-registered (its current text committed strictly before its first results)."""
    from shared.prereg import prereg

    unknown = [s for s in args.slugs if s not in paths.list_papers()]
    if unknown:
        raise ParamError(f"unknown paper {unknown[0]!r} (papers: {', '.join(paths.list_papers())})")
    rows = prereg(args.slugs or None)
    if not rows:
        print("papers prereg: no claim registry found")
        return 0
    table = [("paper", "claim", "registered", "text since", "first results", "pre-registered", "note")]
    table += [(r.slug, r.claim, (r.registered or "-")[:7], (r.text_since or "-")[:7], (r.first_results or "-")[:7],
               r.status, r.note) for r in rows]
    _print_table(table)
    counts: dict[str, int] = {}
    for r in rows:
        counts[r.status] = counts.get(r.status, 0) + 1
    print(f"\n{len(rows)} claims: " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items())))
    return 0


def cmd_diff(args: argparse.Namespace) -> int:
    """The review command: per paper, the claims whose verdict, value or interval changed, old -> new."""
    from shared.diff import DiffError, diff

    unknown = [s for s in args.paper or [] if s not in paths.list_papers()]
    if unknown:
        raise ParamError(f"unknown paper {unknown[0]!r} (papers: {', '.join(paths.list_papers())})")
    try:
        result = diff(args.a, args.b, args.paper or None)
    except DiffError as exc:
        raise ParamError(str(exc)) from None
    print(f"papers diff {args.a} -> {args.b}")
    unchanged = []
    for d in result:
        if not d.lines:
            unchanged.append(d.slug)
            continue
        print(f"{d.slug}")
        for line in d.lines:
            print(f"  {line}")
    if unchanged:
        print(f"unchanged: {', '.join(unchanged)}")
    return 0


def cmd_plots(args: argparse.Namespace) -> int:
    from shared.plots import render

    out = Path(args.out) if args.out else paths.repo_root() / "dvc_plots"
    try:
        page = render(args.revisions, out)
    except RuntimeError as exc:
        print(f"papers plots: error: {exc}", file=sys.stderr)
        return 1
    print(f"papers plots: {page} (self-contained: opens offline)")
    return 0


def shadowed_by_profile(specs: dict, params_file_data: dict, paper: str, profile: str) -> list[str]:
    """Keys whose params.yaml base value was changed from the notebook default (e.g. by ``dvc exp run -S``)
    but which the profile sets to something else, so the change would silently have no effect.

    Profile values take precedence over the section's base values (``shared.params.resolve``); this names
    each such key and how to change it under that profile instead.
    """
    section = dict(params_file_data.get(paper) or {})
    prof = profile_overrides(section, profile, paper)
    notes = []
    for key, value in prof.items():
        spec = specs.get(key)
        if spec is None or key not in section:
            continue
        base = section[key]
        if base != spec.default and value != base:
            notes.append(f"{paper}: {key}={base!r} in params.yaml is overridden by profile {profile!r} "
                         f"({key}={value!r}); to change it under this profile set "
                         f"{paper}.profiles.{profile}.{key}")
    return notes


def _warn_shadowed(slug: str, profile: str) -> None:
    from shared.params import load_params_file, read_notebook_params

    if slug not in paths.list_papers():
        return  # the runner reports the unknown paper
    specs = read_notebook_params(paths.notebook_path(slug))
    for note in shadowed_by_profile(specs, load_params_file(paths.repo_root() / "params.yaml"), slug, profile):
        print(f"papers: warning: {note}", file=sys.stderr)


def cmd_run(args: argparse.Namespace) -> int:
    from shared.report import budget_status
    from shared.runner import RunError, run_paper, verdict_line

    overrides = parse_set_options(args.set or [])
    _warn_shadowed(args.slug, args.profile)
    try:
        result = run_paper(args.slug, profile=args.profile, overrides=overrides, device=args.device,
                           out_dir=args.out, progress=not args.quiet, force=args.force)
    except RunError as exc:
        print(f"papers run: FAILED {exc}", file=sys.stderr)
        return 1
    print(f"papers run: {args.slug} [{args.profile}, {result.metrics['device']}] finished in "
          f"{result.wall_time_s:.1f} s -> {result.out_dir}")
    limit, note = budget_status(args.slug, args.profile, result.metrics["device"], result.wall_time_s)
    if note:
        over = limit is not None and result.wall_time_s > limit
        print(f"papers run: {'WARNING: ' if over else ''}{args.slug} took {result.wall_time_s:.0f} s, {note}",
              file=sys.stderr if over else sys.stdout)
    print(f"papers run: verdicts: {verdict_line(result.metrics)}")
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    from shared.runner import prepare

    values = prepare(args.slug, args.profile, parse_set_options(args.set or []), args.device)
    _warn_shadowed(args.slug, args.profile)
    for key, value in values.items():
        print(f"{key} = {value!r}")
    return 0


def cmd_new(args: argparse.Namespace) -> int:
    from shared.scaffold import scaffold_paper

    created = scaffold_paper(args.slug, title=args.title, url=args.url, grade=args.grade)
    for path in created:
        print(f"created {path}")
    print(f"next: fill in papers/{args.slug}/ (claims in the module, then the notebook), then "
          f"`papers run {args.slug} --profile smoke`")
    return 0


def cmd_deps(args: argparse.Namespace) -> int:
    from shared.deps import stage_code_deps
    from shared.scaffold import sync_stage_deps

    deps = sync_stage_deps(args.slug) if args.write else stage_code_deps(args.slug)
    print("\n".join(deps))
    return 0


def cmd_fetch(args: argparse.Namespace) -> int:
    from shared.data import UNAVAILABLE, DataError, fetch

    try:
        dest = fetch(args.name)
    except DataError as exc:
        print(f"papers fetch: error: {exc}", file=sys.stderr)
        return 1
    if (dest / UNAVAILABLE).exists():
        print(f"papers fetch: {args.name}: optional and not available here -> {dest / UNAVAILABLE}")
        return 0
    n = sum(1 for p in dest.rglob("*") if p.is_file())
    print(f"papers fetch: {args.name}: {n} files verified -> {dest}")
    return 0


def cmd_build_smollm2(args: argparse.Namespace) -> int:
    import time

    from shared.data import DataError
    from shared.lm import SMOLLM2_DIR, SMOLLM2_GGUF, SMOLLM2_SOURCE, build_smollm2_checkpoint

    gguf = Path(args.gguf) if args.gguf else paths.data_dir() / SMOLLM2_SOURCE / SMOLLM2_GGUF
    out = Path(args.out) if args.out else paths.data_dir() / SMOLLM2_DIR
    start = time.perf_counter()
    try:
        dest = build_smollm2_checkpoint(gguf, out)
    except DataError as exc:
        print(f"papers build-smollm2: error: {exc}", file=sys.stderr)
        return 1
    print(f"papers build-smollm2: {gguf.name} -> {dest} in {time.perf_counter() - start:.1f} s")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from shared.report import check_report, write_report

    if args.check:
        stale = check_report()
        for path in stale:
            print(f"stale: {path}", file=sys.stderr)
        return 1 if stale else 0
    for path in write_report():
        print(f"wrote {path}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="papers", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("list", help="every paper, its grade, last verdicts and runtime")
    p.set_defaults(func=cmd_list)
    p = sub.add_parser("summary", help="each paper's claims with value, interval and verdict")
    p.set_defaults(func=cmd_summary)

    for name, func, text in (("run", cmd_run, "execute a paper's notebook (what a DVC stage calls)"),
                             ("check", cmd_check, "resolve and validate a paper's parameters only")):
        p = sub.add_parser(name, help=text)
        p.add_argument("slug")
        p.add_argument("--profile", default="small", choices=PROFILES)
        p.add_argument("--set", action="append", metavar="KEY=VALUE",
                       help="override one parameter (YAML value); repeatable")
        p.add_argument("--device", default="auto", help="auto (cuda > mps > cpu), cpu, cuda, cuda:N, mps")
        if name == "run":
            p.add_argument("--out", default=None,
                           help="destination directory, replaced as a whole (default: results/SLUG for the "
                                "pipeline's profile without --set, else scratch/runs/SLUG/PROFILE)")
            p.add_argument("--force", action="store_true",
                           help="allow --out to replace a directory that is not a previous run's output")
            p.add_argument("--quiet", action="store_true", help="no progress output")
        p.set_defaults(func=func)

    p = sub.add_parser("new", help="scaffold a new paper from the template")
    p.add_argument("slug")
    p.add_argument("--title", required=True)
    p.add_argument("--url", required=True, help="the paper's page, e.g. https://arxiv.org/abs/...")
    p.add_argument("--grade", default="B", choices=list("ABCD"), help="fidelity grade (see README)")
    p.set_defaults(func=cmd_new)

    p = sub.add_parser("deps", help="the code files a paper's stage depends on (its import closure)")
    p.add_argument("slug")
    p.add_argument("--write", action="store_true", help="also set them as the stage's deps in dvc.yaml")
    p.set_defaults(func=cmd_deps)

    p = sub.add_parser("fetch", help="fetch and verify one dataset of data/sources.yaml into data/NAME")
    p.add_argument("name")
    p.set_defaults(func=cmd_fetch)

    p = sub.add_parser("build-smollm2", help="dequantise the SmolLM2 GGUF into a transformers checkpoint "
                                             "(data/smollm2_gguf -> data/smollm2)")
    p.add_argument("--gguf", default=None, help="the GGUF file (default data/smollm2_gguf/<its name>)")
    p.add_argument("--out", default=None, help="destination directory (default data/smollm2)")
    p.set_defaults(func=cmd_build_smollm2)

    p = sub.add_parser("prereg", help="per claim, the commit that registered it and whether that was before "
                                      "its first committed results (read from git)")
    p.add_argument("slugs", nargs="*", metavar="SLUG")
    p.set_defaults(func=cmd_prereg)

    p = sub.add_parser("diff", help="claims whose verdict, value or interval changed between two revisions")
    p.add_argument("a", nargs="?", default="HEAD", help="the old revision (default HEAD)")
    p.add_argument("b", nargs="?", default="workspace", help="the new revision (default: the working tree)")
    p.add_argument("--paper", action="append", metavar="SLUG", help="only this paper; repeatable")
    p.set_defaults(func=cmd_diff)

    p = sub.add_parser("plots", help="`dvc plots diff` rendered as a page that opens offline")
    p.add_argument("revisions", nargs="*", metavar="REV", help="revisions to compare (default: HEAD and workspace)")
    p.add_argument("-o", "--out", default=None, help="output directory (default dvc_plots/, git-ignored)")
    p.set_defaults(func=cmd_plots)

    p = sub.add_parser("report", help="regenerate the results tables in README.md and papers/*/README.md")
    p.add_argument("--check", action="store_true", help="exit 1 if any table is stale; write nothing")
    p.set_defaults(func=cmd_report)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ParamError, ScaffoldError) as exc:  # bad input: one line, no traceback
        print(f"papers {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM/SIGHUP during a run (the runner maps them)
        what = f" ({exc})" if str(exc) else ""
        tail = "; nothing was written, the destination is as it was" if args.command == "run" else ""
        print(f"papers {args.command}: interrupted{what}{tail}", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `papers list | head`: the reader left; not an error of ours
        import os

        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
