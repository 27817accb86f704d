"""The `rnnkit tune` demonstration: a study killed with SIGKILL halfway, resumed, and checked.

1. starts ``rnnkit tune`` (``--trials N``) in a subprocess and SIGKILLs it as soon as half the
   trials have finished (the next trial is then usually mid-epoch);
2. resumes it with ``rnnkit tune --resume`` until N trials have finished (complete or pruned);
3. trains ``best.yaml`` into a fresh run folder and prints its scores beside the best trial's;
4. with ``--compare-dir``, runs the same study (same seed and space) without pruning, to set the
   wall time pruning saved beside the time of the pruned study.

Defaults: configs/quickstart.yaml (4 newsgroups of the shipped sample, 1,200 training posts,
4 epochs) and configs/tune-space.yaml. Run it from the repository root::

    nice -n 10 python scripts/tune_demo.py --study-dir runs/tune-demo --compare-dir runs/tune-demo-nopruning \
        --set train.num_threads=1
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna

FINISHED = ("COMPLETE", "PRUNED")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", default="configs/quickstart.yaml")
    parser.add_argument("--space", default="configs/tune-space.yaml")
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--set", action="append", default=[], help="a config override for every trial")
    parser.add_argument("--study-dir", type=Path, required=True)
    parser.add_argument("--compare-dir", type=Path, help="also run the study without pruning here")
    parser.add_argument("--json", type=Path, help="write the figures to this file")
    args = parser.parse_args()
    if args.study_dir.exists():
        sys.exit(f"{args.study_dir} exists; give a new --study-dir")

    tune = [sys.executable, "-m", "rnnkit", "tune", "--config", args.config, "--space", args.space]
    tune += [arg for setting in args.set for arg in ("--set", setting)]
    tune += ["--trials", str(args.trials), "--study-dir", str(args.study_dir)]
    started = time.perf_counter()
    killed_at = kill_halfway(tune, args.study_dir, args.trials // 2)
    first_part_s = time.perf_counter() - started
    print(f"killed after {first_part_s:.0f} s; trials then: {killed_at}", flush=True)

    resumed = time.perf_counter()
    subprocess.run([*tune[:3], "tune", "--resume", "--study-dir", str(args.study_dir)], check=True)
    study_s = first_part_s + time.perf_counter() - resumed
    states = trial_states(args.study_dir)
    best = load(args.study_dir).best_trial
    print(f"after --resume: {states}", flush=True)

    retrained = args.study_dir / "best-run"
    best_yaml = args.study_dir / "best.yaml"
    subprocess.run(
        [*tune[:3], "train", "-q", "--config", str(best_yaml), "--run-dir", str(retrained)], check=True
    )
    metrics = json.loads((retrained / "metrics.json").read_text())
    figures = {
        "trials": args.trials,
        "states_when_killed": killed_at,
        "states_after_resume": states,
        "study_wall_s": round(study_s, 1),
        "best_trial": best.number,
        "best_trial_val": best.value,
        "best_trial_test_accuracy": best.user_attrs["test_accuracy"],
        "best_yaml_val": metrics["validation"][monitor_score(args.study_dir)],
        "best_yaml_test_accuracy": metrics["test"]["accuracy"],
        "pruned_trial_s": sum(t.user_attrs.get("wall_s", 0) for t in finished(args.study_dir, "PRUNED")),
        "complete_trial_s": sum(t.user_attrs.get("wall_s", 0) for t in finished(args.study_dir, "COMPLETE")),
    }
    if args.compare_dir:
        if args.compare_dir.exists():
            shutil.rmtree(args.compare_dir)
        compare = [*tune[:-1], str(args.compare_dir), "--pruner", "none"]
        started = time.perf_counter()
        subprocess.run(compare, check=True)
        figures["unpruned_wall_s"] = round(time.perf_counter() - started, 1)
        unpruned = load(args.compare_dir).best_trial
        figures["unpruned_best_val"] = unpruned.value
        figures["unpruned_best_test_accuracy"] = unpruned.user_attrs["test_accuracy"]
    print(json.dumps(figures, indent=2))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")


def kill_halfway(command: list[str], study_dir: Path, half: int) -> dict[str, int]:
    """Start the study, SIGKILL it once ``half`` trials have finished; the states at that moment."""
    process = subprocess.Popen(command)
    try:
        while process.poll() is None:
            time.sleep(5)
            if (study_dir / "study.db").exists() and sum(
                trial_states(study_dir).get(s, 0) for s in FINISHED
            ) >= half:
                process.send_signal(signal.SIGKILL)
                process.wait()
                return trial_states(study_dir)
    finally:
        if process.poll() is None:
            process.kill()
    sys.exit(f"the study ended (status {process.returncode}) before {half} trials finished")


def load(study_dir: Path) -> optuna.Study:
    return optuna.load_study(study_name="rnnkit", storage=f"sqlite:///{study_dir.resolve() / 'study.db'}")


def trial_states(study_dir: Path) -> dict[str, int]:
    try:
        trials = load(study_dir).get_trials(deepcopy=False)
    except KeyError:  # the study is not created yet
        return {}
    states: dict[str, int] = {}
    for trial in trials:
        states[trial.state.name] = states.get(trial.state.name, 0) + 1
    return states


def finished(study_dir: Path, state: str) -> list[optuna.trial.FrozenTrial]:
    return [t for t in load(study_dir).get_trials(deepcopy=False) if t.state.name == state]


def monitor_score(study_dir: Path) -> str:
    import yaml

    monitor = yaml.safe_load((study_dir / "study.yaml").read_text())["monitor"]
    return {"val_accuracy": "accuracy", "val_macro_f1": "macro_f1", "val_loss": "loss"}[monitor]


if __name__ == "__main__":
    main()
