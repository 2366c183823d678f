# %% [markdown]
# # Skill-Targeted Adaptive Training: replication at toy scale
#
# He, Panigrahi, Lin, Arora (2025), [arXiv:2510.10023](https://arxiv.org/abs/2510.10023).
#
# **The paper.** Students already post-trained on MATH "saturate": more vanilla SFT on similar data gains
# little. STAT lets a teacher LLM find the student's failed validation questions, name the skills each one is
# missing (the *Missing-Skill-Profile*), and re-select training questions per missing-skill occurrence
# (STAT-Sel). Gains: up to +7.5 pp on MATH, +4.6 pp on average out of distribution.
#
# **This notebook.** A synthetic world where every problem is a chain of known skills (affine maps mod 97,
# drawn with Zipf frequencies), a from-scratch step student trained on a finite imbalanced training set until
# its validation accuracy plateaus, an exact programmatic teacher, and continued training from the same
# saturated student with the SAME number of extra problems and steps under six selections: `replay` (no new
# problems: the saturation check), `uniform` and `uniform_b` (vanilla SFT on the original mixture, two
# draws), `stat_sel` (STAT-Sel), `stat_shuffled` (the profile with its skills permuted: the control) and
# `similarity` (embedding-nearest pool problems to the failures). Evaluation: in-distribution (2-3 steps) and
# shifted (5-step) test problems. The claims, gates and controls are registered in `claims.yaml`.

# %% tags=["parameters"]
profile: str = "small"  # parameter profile (set by the runner)
device: str = "auto"  # auto (cuda > mps > cpu), cpu, cuda, mps (set by the runner; tiny MLPs: always run on cpu)
output_dir: str = ""  # where outputs go; empty = scratch/stat (set by the runner)
progress: bool = True  # show progress lines (set by the runner)
seeds: list[int] = [0, 1, 2, 3, 4]  # evaluation seeds (world, data, init, selections) | len(x) >= 1 and len(set(x)) == len(x) and all(s >= 0 for s in x)
workers: int = 2  # single-threaded worker processes, one seed per job | x >= 1
p: int = 97  # modulus (prime): values 0..p-1 | x >= 5 and all(x % d for d in range(2, int(x ** 0.5) + 1))
n_skills: int = 12  # skills in the catalog (affine maps x -> a x + b mod p) | 2 <= x <= 100
zipf: float = 1.2  # Zipf exponent of the skill mixture (0 = balanced) | x >= 0
lengths: list[int] = [2, 3]  # steps per in-distribution problem | len(x) >= 1 and all(1 <= l <= 10 for l in x)
ood_lengths: list[int] = [5]  # steps per shifted (OOD) test problem | len(x) >= 1 and all(1 <= l <= 20 for l in x)
n_pretrain: int = 1500  # problems in the student's finite training set | x >= 10
n_pool: int = 20000  # problems in the selection pool (fresh, original mixture) | x >= 2 * n_extra
n_val: int = 2000  # validation problems the teacher diagnoses | x >= 10
n_test: int = 4000  # test problems per test set (ID and OOD) | x >= 10
hidden: int = 128  # student width | x >= 4
batch_size: int = 128  # problems per step (all their steps are trained) | x >= 1
pretrain_steps: int = 800  # pre-training steps (validation plateaus by ~400 in pilots) | x >= 1
lr: float = 0.003  # pre-training peak learning rate (AdamW, warmup + cosine) | 0 < x < 1
eval_every: int = 100  # validation accuracy every this many pre-training steps | x >= 1
max_failures: int = 500  # failed validation problems the profile is built from (the paper's 500) | x >= 1
max_skills: int = 3  # missing skills named per failed problem (the paper's 2-3) | x >= 1
n_extra: int = 500  # extra pool problems added by every selecting arm | x >= 1
continue_steps: int = 600  # continued-training steps, every arm | x >= 1
lr_continue: float = 0.001  # continued-training peak learning rate, every arm | 0 < x < 1

# %%
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from papers.stat import TITLE, URL
from papers.stat.analysis import (GATE_MAX_ACC, GATE_MIN_ACC, GATE_MIN_FAILURES, GATE_PLATEAU_TOL, arm_summary,
                                  measure_gain, measure_profile, measure_vanilla_gain)
from papers.stat.method import ARMS, run_seed
from shared.claims import load_claims
from shared.metrics import write_metrics
from shared.parallel import run_jobs
from shared.params import snapshot
from shared.paths import resolve_output_dir
from shared.plotting import savefig, set_theme

set_theme()
out = resolve_output_dir(output_dir, "stat")
print(f"profile={profile} output={out} (tiny MLP students: cpu, one thread per seed)")

# %% [markdown]
# ## Pre-train, diagnose, continue: one job per seed

# %%
cfg = dict(p=p, n_skills=n_skills, zipf=zipf, lengths=lengths, ood_lengths=ood_lengths, n_pretrain=n_pretrain,
           n_pool=n_pool, n_val=n_val, n_test=n_test, hidden=hidden, batch_size=batch_size,
           pretrain_steps=pretrain_steps, lr=lr, eval_every=eval_every, max_failures=max_failures,
           max_skills=max_skills, n_extra=n_extra, continue_steps=continue_steps, lr_continue=lr_continue)


def _done(i, res, n):
    if progress:
        print(f"seed {seeds[i]} done ({n}/{len(seeds)}): failures diagnosed {res['n_failures']}", flush=True)


results = run_jobs(run_seed, [(s, cfg) for s in seeds], workers=min(workers, len(seeds)), on_done=_done)
rows = pd.DataFrame([r for res in results for r in res["rows"]])
curve = pd.DataFrame([r for res in results for r in res["curve"]])
profile_df = pd.DataFrame([r for res in results for r in res["profile"]])
selected = pd.DataFrame([r for res in results for r in res["selected"]])
n_failures = {s: res["n_failures"] for s, res in zip(seeds, results)}
summary = arm_summary(rows)
summary

# %% [markdown]
# ## The Missing-Skill-Profile and what each arm selected
# Skills are numbered by pre-training frequency (0 = most frequent). `missing`: missing-skill occurrences in
# the profile (summed over seeds); the selections' skill occurrences are shares of all selected steps.

# %%
prof = profile_df.groupby("skill")[["freq", "missing", "missing_shuffled", "test_step_error"]].agg(
    {"freq": "mean", "missing": "sum", "missing_shuffled": "sum", "test_step_error": "mean"})
share = (selected.groupby(["arm", "skill"])["occurrences"].sum()
         / selected.groupby("arm")["occurrences"].sum()).unstack("arm")
prof.join(share.add_prefix("share_"))

# %% [markdown]
# ## Verdicts

# %%
claims = load_claims("stat")
gate_args = dict(min_acc=GATE_MIN_ACC, max_acc=GATE_MAX_ACC, plateau_tol=GATE_PLATEAU_TOL)
for cid, arm, ref, metric, carm, cref, cdetail in [
        ("stat_sel_gain_id", "stat_sel", "uniform", "id_acc", "stat_shuffled", "uniform", "shuffled-profile selection"),
        ("stat_sel_gain_ood", "stat_sel", "uniform", "ood_acc", "stat_shuffled", "uniform", "shuffled-profile selection"),
        ("diagnosis_beats_shuffled_profile_id", "stat_sel", "stat_shuffled", "id_acc", "uniform_b", "uniform", "A/A"),
        ("stat_sel_beats_similarity_id", "stat_sel", "similarity", "id_acc", "uniform_b", "uniform", "A/A")]:
    m, g, c = measure_gain(rows, arm, ref, metric, carm, cref, control_detail=cdetail, **gate_args)
    claims[cid].evaluate(m, gate=g, control=c, detail=f"{arm} - {ref} on {metric}: {m.value:+.4f}")
m, g, c = measure_profile(profile_df, n_failures, GATE_MIN_FAILURES)
claims["profile_tracks_heldout_weakness"].evaluate(m, gate=g, control=c, detail=f"mean rho {m.value:+.3f}")
m, g = measure_vanilla_gain(rows, **gate_args)
claims["vanilla_sft_gain_small_id"].evaluate(m, gate=g, detail=f"uniform - base on id_acc: {m.value:+.4f}")
pd.DataFrame([{"claim": c.id, "value": c.measured.value, "ci_low": c.measured.ci_low, "ci_high": c.measured.ci_high,
               "control": c.control.measured.value if c.control else None, "verdict": c.verdict, "reason": c.reason}
              for c in claims.values()])

# %% [markdown]
# ## Figures
# Accuracy change of every continued-training arm vs the saturated student (points: seeds), and per-skill
# teacher-forced step accuracy (ID test, mean over seeds) before and after.

# %%
long = rows.melt(id_vars=["seed", "arm"], value_vars=["id_acc", "ood_acc"], var_name="test", value_name="acc")
base = long[long["arm"] == "base"].set_index(["seed", "test"])["acc"]
long = long[long["arm"] != "base"].copy()
long["gain"] = long["acc"].to_numpy() - base.loc[list(zip(long["seed"], long["test"]))].to_numpy()
long["test"] = long["test"].map({"id_acc": "ID (2-3 steps)", "ood_acc": "OOD (5 steps)"})
g = sns.catplot(data=long, x="arm", y="gain", col="test", kind="bar", order=list(ARMS), errorbar=("ci", 95),
                seed=0, height=3.6, aspect=1.3, color="C0")
for ax in g.axes.flat:
    sns.stripplot(data=long[long["test"] == ax.get_title().split(" = ")[1]], x="arm", y="gain", order=list(ARMS),
                  color="k", size=3, jitter=False, ax=ax)
    ax.axhline(0, color="k", lw=0.8)
    ax.tick_params(axis="x", rotation=30)
g.set_axis_labels("", "accuracy - saturated student")
savefig(g.figure, out / "gains.png")

# %%
skill_cols = [f"skill_{k}" for k in range(n_skills)]
heat = rows.groupby("arm")[skill_cols].mean().loc[["base", "uniform", "stat_shuffled", "similarity", "stat_sel"]]
heat.columns = range(n_skills)
fig, axes = plt.subplots(1, 2, figsize=(13, 3.6), gridspec_kw={"width_ratios": [2.2, 1]})
sns.heatmap(heat, vmin=0.4, vmax=1.0, annot=True, fmt=".2f", annot_kws={"size": 7}, cmap="viridis", ax=axes[0])
axes[0].set(xlabel="skill (0 = most frequent in pre-training)", ylabel="", title="step accuracy per skill")
sns.lineplot(data=curve, x="step", y="val_acc", units="seed", estimator=None, lw=1, ax=axes[1])
axes[1].set(title="pre-training: validation accuracy (plateau)", ylabel="answer accuracy")
fig.tight_layout()
savefig(fig, out / "skills_and_plateau.png")

# %% [markdown]
# ## Write the results

# %%
rows.to_csv(out / "per_seed.csv", index=False, float_format="%.6g")
profile_df.to_csv(out / "profile.csv", index=False, float_format="%.6g")
summary.to_csv(out / "arm_summary.csv", index=False, float_format="%.6g")
selected.to_csv(out / "selected_skills.csv", index=False)  # skill occurrences in each arm's extra problems
curve.pivot(index="step", columns="seed", values="val_acc").add_prefix("val_acc_seed").reset_index().to_csv(
    out / "pretrain_curve.csv", index=False, float_format="%.6g")
wide = rows.pivot(index="seed", columns="arm", values="id_acc")
headline = {"base_id_acc": float(wide["base"].mean()),
            "uniform_minus_base_id": float((wide["uniform"] - wide["base"]).mean()),
            "replay_minus_base_id": float((wide["replay"] - wide["base"]).mean()),
            "stat_sel_minus_base_id": float((wide["stat_sel"] - wide["base"]).mean()),
            "failures_diagnosed_min": int(min(n_failures.values()))}
write_metrics(out, slug="stat", title=TITLE, url=URL, profile=profile, device="cpu", seeds=seeds,
              claims=list(claims.values()), headline=headline, params=snapshot(globals(), "stat"))
for c in claims.values():
    print(f"{c.id}: {c.verdict} ({c.reason})")
