"""The experiment contract, the runner (resume, pools, Ray, failures) and the report."""

from __future__ import annotations

import dataclasses
import errno
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from normonly.experiments import registry, store
from normonly.experiments.base import Experiment, ExperimentConfig, draw_figures
from normonly.experiments.report import ReportError, write_report
from normonly.experiments.runner import TrialsFailed, reproduce, run_experiment

from .conftest import PNG_MAGIC, file_lines, rows_path, stable
from .toy import TOY, ToyConfig

# --- config ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Cfg(ExperimentConfig):
    width: int = 3
    lr: float = 0.1
    flag: bool = False
    name: str = "a"
    sizes: tuple[int, ...] = (1, 2)
    rates: tuple[float, ...] = (0.5,)
    opts: tuple[str, ...] = ("sgd",)
    k: int | None = None
    note: str = field(default="", metadata={"digest": False})


def test_replace_coerces_strings():
    cfg = _Cfg().replace(
        width="5", lr="1e-3", flag="true", name="b", sizes="4, 5,6", rates="0.1,1", opts="adam,sgd"
    )
    assert cfg == _Cfg(5, 1e-3, True, "b", (4, 5, 6), (0.1, 1.0), ("adam", "sgd"))
    assert _Cfg().replace(flag="0").flag is False
    with pytest.raises(ValueError, match="sizes must not be empty"):
        _Cfg().replace(sizes="")
    assert _Cfg().replace(k="7").k == 7
    assert _Cfg(k=7).replace(k="none").k is None
    assert _Cfg().replace(sizes=[3, 4]).sizes == (3, 4)


def test_text_values_are_toml_with_a_comma_shorthand():
    cfg = _Cfg().replace(
        sizes="[3, 4]", rates="[0.5, 1e-3]", opts='["adam", "sgd"]', lr="2", width="4.0"
    )
    assert (cfg.sizes, cfg.rates, cfg.opts) == ((3, 4), (0.5, 1e-3), ("adam", "sgd"))
    assert (cfg.lr, cfg.width) == (2.0, 4)
    assert _Cfg().replace(sizes="7").sizes == (7,)  # one value for a list field: a list of one
    assert _Cfg().replace(opts="16-16-16,8-8").opts == ("16-16-16", "8-8")  # bare words
    assert _Cfg().replace(name='"b"').name == _Cfg().replace(name="b").name == "b"
    assert _Cfg().replace(name="[1, 2]").name == "[1, 2]"  # a string field keeps its text
    assert _Cfg().replace(k="NULL").k is None
    with pytest.raises(ValueError, match="expected a boolean"):
        _Cfg().replace(flag="yes")  # booleans are TOML's true/false
    with pytest.raises(ValueError, match="expected an integer"):
        _Cfg().replace(sizes='["5"]')  # a quoted item is a string
    with pytest.raises(ValueError, match="expected an integer"):
        _Cfg.from_dict({"width": "5"})  # typed data (JSON, saved configs) is not parsed


@pytest.mark.parametrize(
    ("key", "value", "match"),
    [
        ("width", "abc", "expected an integer"),
        ("width", "2.5", "expected an integer"),
        ("lr", "fast", "expected a number"),
        ("flag", "maybe", "expected a boolean"),
        ("sizes", "1,x", "expected an integer"),
    ],
)
def test_replace_rejects_bad_values(key, value, match):
    with pytest.raises(ValueError, match=match):
        _Cfg().replace(**{key: value})


def test_unknown_key_lists_valid_keys():
    with pytest.raises(ValueError, match=r"unknown config key 'widht'.*valid keys: width, lr"):
        _Cfg().replace(widht=3)
    with pytest.raises(ValueError, match="valid keys: width"):
        _Cfg.from_dict({"nope": 1})


def test_to_dict_from_dict_roundtrip_and_digest():
    cfg = _Cfg(width=4, sizes=(3, 1), k=2)
    data = cfg.to_dict()
    assert data["sizes"] == [3, 1]
    assert json.loads(json.dumps(data)) == data
    back = _Cfg.from_dict(json.loads(json.dumps(data)))
    assert back == cfg
    assert back.digest("E1") == cfg.digest("E1")
    assert len(cfg.digest("E1")) == 12
    assert cfg.digest("E1") != cfg.digest("E2")
    assert cfg.digest("E1") != cfg.replace(width=5).digest("E1")
    assert cfg.digest("E1") == cfg.replace(note="ignored").digest("E1")
    assert _Cfg(lr=1).to_dict()["lr"] == 1.0  # canonical: the digest does not see int vs float
    assert _Cfg(lr=1).digest() == _Cfg(lr=1.0).digest()


def test_presets_default_to_defaults():
    assert _Cfg.quick() == _Cfg() == _Cfg.full()
    assert ToyConfig.full().n_trials == 8
    assert TOY.preset("quick") == ToyConfig()
    with pytest.raises(ValueError, match="profile"):
        TOY.preset("medium")


def test_experiment_validates_fields():
    with pytest.raises(ValueError, match="name"):
        dataclasses.replace(TOY, name="E 1")
    with pytest.raises(TypeError, match="ExperimentConfig"):
        dataclasses.replace(TOY, config_cls=dict)


def test_serial_run_is_deterministic():
    cfg = ToyConfig(n_trials=3)
    assert TOY.run(cfg) == TOY.run(cfg)
    assert len(TOY.trials(cfg)) == 3


# --- registry -------------------------------------------------------------------------------------


def test_registry_get_is_case_insensitive(toy):
    assert registry.get("toy") is toy
    assert toy in registry.all_experiments()
    registry.register(toy)  # the same object again is fine
    with pytest.raises(ValueError, match="already registered"):
        registry.register(dataclasses.replace(toy, title="other"))


def test_registry_unknown_name_lists_known(toy):
    with pytest.raises(ValueError, match=r"unknown experiment 'E99'; known experiments: .*TOY"):
        registry.get("E99")


# --- runner ---------------------------------------------------------------------------------------


def test_run_writes_config_rows_and_figures(tmp_path, toy_config):
    rows = run_experiment(TOY, toy_config, tmp_path, progress=False)
    run = tmp_path / "TOY" / TOY.digest(toy_config)
    config = json.loads((run / "config.json").read_text())
    assert config == {
        "experiment": "TOY",
        "config": toy_config.to_dict(),
        "profile": "quick",
        "digest": run.name,  # the file names the directory it belongs to
    }
    assert [r["key"] for r in rows] == ["t000", "t001", "t002", "t003"]
    for field_ in (
        "seed",
        "wall_time_s",
        "normonly_version",
        "torch_version",
        "numpy_version",
        "git_commit",
        "device",
        "hostname",
        "timestamp",
        "index",
        "value",
    ):
        assert field_ in rows[0]
    assert rows[2]["seed"] == 2
    assert store.read_rows(run) == rows
    png = run / "figures" / "values.png"
    assert png.read_bytes()[:8] == PNG_MAGIC


def test_resume_skips_finished_trials(tmp_path, toy_config):
    calls = []

    def counting(config, trial):
        calls.append(trial["key"])
        return TOY.run_trial(config, trial)

    exp = dataclasses.replace(TOY, run_trial=counting)
    first = run_experiment(exp, toy_config, tmp_path, progress=False)
    assert len(calls) == 4
    path = rows_path(tmp_path, toy_config)
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(lines[:2]))  # as if the sweep had stopped after two trials
    calls.clear()
    second = run_experiment(exp, toy_config, tmp_path, progress=False)
    assert calls == ["t002", "t003"]
    assert stable(second) == stable(first)
    calls.clear()
    run_experiment(exp, toy_config, tmp_path, progress=False)
    assert calls == []
    assert len(file_lines(path)) == 4


def test_failed_trials_are_collected(tmp_path):
    cfg = ToyConfig(n_trials=4, fail_keys=("t001", "t003"))
    with pytest.raises(TrialsFailed, match=r"2 of 4 trials of TOY failed.*t001: ValueError") as e:
        run_experiment(TOY, cfg, tmp_path, progress=False)
    assert [k for k, _ in e.value.failures] == ["t001", "t003"]
    assert [r["key"] for r in store.read_rows(rows_path(tmp_path, cfg))] == ["t000", "t002"]


def test_disk_full_mid_sweep_keeps_written_rows(tmp_path, monkeypatch, toy_config):
    real = store._write_all
    written = []

    def fill_up_after_two(fd, data):
        if len(written) == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        real(fd, data)
        written.append(data)

    monkeypatch.setattr(store, "_write_all", fill_up_after_two)
    with pytest.raises(store.StoreError, match="No space left on device") as info:
        run_experiment(TOY, toy_config, tmp_path, progress=False)
    assert "rows.jsonl" in str(info.value)
    path = rows_path(tmp_path, toy_config)
    assert [r["key"] for r in store.read_rows(path)] == ["t000", "t001"]
    monkeypatch.undo()
    rows = run_experiment(TOY, toy_config, tmp_path, progress=False)
    assert len(rows) == len(file_lines(path)) == 4


def test_bad_arguments(tmp_path, toy_config):
    with pytest.raises(ValueError, match="jobs"):
        run_experiment(TOY, toy_config, tmp_path, jobs=0)
    with pytest.raises(ValueError, match="backend"):
        run_experiment(TOY, toy_config, tmp_path, backend="slurm")
    with pytest.raises(TypeError, match="ToyConfig"):
        run_experiment(TOY, _Cfg(), tmp_path)


def test_bad_trials_rejected(tmp_path, toy_config):
    exp = dataclasses.replace(TOY, trials=lambda cfg: [{"key": "a", "seed": 0}] * 2)
    with pytest.raises(ValueError, match="duplicate trial key"):
        run_experiment(exp, toy_config, tmp_path)


@pytest.mark.slow
def test_process_pool_gives_same_rows(tmp_path, toy_config):
    serial = run_experiment(TOY, toy_config, tmp_path / "a", progress=False)
    pooled = run_experiment(TOY, toy_config, tmp_path / "b", jobs=2, progress=False)
    assert stable(pooled) == stable(serial)
    assert len(file_lines(rows_path(tmp_path / "b", toy_config))) == 4


@pytest.mark.slow
@pytest.mark.ray
def test_ray_backend_gives_same_rows(tmp_path, toy_config, monkeypatch):
    import ray  # a dev dependency: missing is a failure, not a skip
    # Ray's workers unpickle TOY.run_trial by reference: they must import experiments.toy
    tests_dir = str(Path(__file__).resolve().parents[1])
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([tests_dir, os.environ.get("PYTHONPATH", "")]))
    local = run_experiment(TOY, toy_config, tmp_path / "local", progress=False)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        remote = run_experiment(
            TOY, toy_config, tmp_path / "ray", jobs=2, backend="ray", progress=False
        )
        assert stable(remote) == stable(local)
        assert ray.is_initialized()  # the runner leaves a Ray it did not start alone
        failing = ToyConfig(n_trials=2, fail_keys=("t001",))
        with pytest.raises(TrialsFailed, match="t001: ValueError: planned failure"):
            run_experiment(TOY, failing, tmp_path / "ray", jobs=2, backend="ray", progress=False)
    finally:
        ray.shutdown()


# --- report and reproduce -------------------------------------------------------------------------


def test_report_from_saved_rows(tmp_path, toy):
    old = ToyConfig(n_trials=2)
    run_experiment(toy, old, tmp_path, progress=False)
    new = ToyConfig(n_trials=3)
    run_experiment(toy, new, tmp_path, progress=False)
    for png in tmp_path.glob("TOY/*/figures/*.png"):
        png.unlink()  # the report redraws them from the rows
    text = write_report(tmp_path).read_text()
    assert "## TOY — Toy sweep" in text
    assert toy.question in text
    assert f"![TOY: values](TOY/{toy.digest(new)}/figures/values.png)" in text
    assert toy.digest(old) in text  # the older settings are mentioned
    assert "3 of 3 trials stored" in text
    assert "n_trials = 3" in text
    assert "mean" in text
    assert (tmp_path / "TOY" / toy.digest(new) / "figures" / "values.png").read_bytes()[:8] == (
        PNG_MAGIC
    )


def test_report_of_missing_dir(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        write_report(tmp_path / "nope")


def test_reproduce_runs_presets_and_writes_report(tmp_path, toy):
    report = reproduce(tmp_path, only=["toy"], progress=False)
    assert report == tmp_path / "report.md"
    assert "## TOY" in report.read_text()
    digest = toy.digest(ToyConfig.quick())
    assert json.loads((tmp_path / "TOY" / digest / "config.json").read_text())["profile"] == "quick"
    with pytest.raises(ValueError, match="profile"):
        reproduce(tmp_path, profile="huge", only=["toy"])


@pytest.mark.parametrize("jobs", [1, 2])
def test_reproduce_draws_each_figure_once(tmp_path, toy, monkeypatch, jobs):
    from normonly.experiments import report as report_module
    from normonly.experiments import runner

    calls = []

    def counted(*args, **kw):
        calls.append(args[0].name)
        return draw_figures(*args, **kw)

    if jobs == 1:  # with jobs=2 a pool worker draws them: the runner submits draw_figures
        monkeypatch.setattr(runner, "draw_figures", counted)
    monkeypatch.setattr(report_module, "draw_figures", counted)
    text = reproduce(tmp_path, only=["toy"], jobs=jobs, progress=False).read_text()
    assert calls == (["TOY"] if jobs == 1 else [])  # by the report, or only by the worker
    digest = toy.digest(ToyConfig.quick())
    png = tmp_path / "TOY" / digest / "figures" / "values.png"
    assert png.read_bytes()[:8] == PNG_MAGIC
    assert f"![TOY: values](TOY/{digest}/figures/values.png)" in text


def test_report_notes_figures_that_failed_in_a_worker(tmp_path, toy):
    run_experiment(toy, ToyConfig(n_trials=2), tmp_path, progress=False, figures=False)
    run = next(tmp_path.glob("TOY/*"))
    with pytest.raises(ReportError, match="the figures failed: OSError: disk full"):
        write_report(tmp_path, figures={run: OSError("disk full")})
    assert "**Figures failed:** `OSError: disk full`" in (tmp_path / "report.md").read_text()
    assert not list(run.glob("figures/*.png"))  # figures=False drew nothing


def test_reproduce_reports_failures_after_writing_report(tmp_path, toy, monkeypatch):
    monkeypatch.setattr(ToyConfig, "quick", classmethod(lambda cls: cls(fail_keys=("t000",))))
    with pytest.raises(TrialsFailed, match="TOY/t000"):
        reproduce(tmp_path, only=["TOY"], progress=False)
    assert (tmp_path / "report.md").exists()


def test_experiment_contract_example():
    """A minimal experiment written against the contract runs serially."""

    @dataclass(frozen=True)
    class Cfg(ExperimentConfig):
        n: int = 2

    exp = Experiment(
        name="EX",
        title="t",
        question="q?",
        config_cls=Cfg,
        trials=lambda c: [{"key": str(i), "seed": i} for i in range(c.n)],
        run_trial=lambda c, t: {"y": t["seed"] * 2},
        figures=lambda c, rows, d: [],
        summarize=lambda c, rows: ("", ""),
    )
    assert exp.run(Cfg()) == [{"y": 0}, {"y": 2}]
