"""The export settings (``serving.settings.ExportSettings``): one validated object shared by
``serving.export`` and ``serving.federated_export``, and export functions of at most five
parameters. No model, workflow or server is needed here."""

import argparse
import dataclasses
import importlib
import inspect

import pytest

MAX_PARAMETERS = 5
EXPORT_MODULES = ("serving.export", "serving.federated_export")


def _public_functions(module_name: str):
    module = importlib.import_module(module_name)
    return {name: obj for name, obj in vars(module).items()
            if inspect.isfunction(obj) and obj.__module__ == module_name
            and not name.startswith("_")}


@pytest.mark.parametrize("module_name", EXPORT_MODULES)
def test_no_public_export_function_takes_more_than_five_parameters(module_name):
    functions = _public_functions(module_name)
    assert functions, module_name
    too_many = {name: list(inspect.signature(f).parameters) for name, f in functions.items()
                if len(inspect.signature(f).parameters) > MAX_PARAMETERS}
    assert not too_many, f"{module_name}: more than {MAX_PARAMETERS} parameters: {too_many}"


def test_every_export_takes_the_one_settings_object():
    from serving import export, federated_export
    for f in (export.export, federated_export.export_media, federated_export.export_advertiser,
              federated_export.export_federated, export.probe_feed):
        assert "settings" in inspect.signature(f).parameters, f.__name__


@pytest.mark.parametrize("field, value, rule", [
    ("target", "gpu", "one of ('cpu', 'ngc')"),
    ("runtime", "tensorrt", "one of ('onnx', 'tf')"),
    ("instance_kind", "KIND_TPU", "'auto' or one of ('KIND_CPU', 'KIND_GPU')"),
    ("instances", {"predict": 0}, "a mapping of steps"),
    ("instances", {"postprocess": 1}, "a mapping of steps"),
    ("max_batch_size", 0, "an int >= 1"),
    ("max_batch_size", 2.5, "an int >= 1"),
    ("max_batch_size", True, "an int >= 1"),
    ("queue_delay_us", -1, "an int >= 0"),
    ("tf_threads", -1, "an int >= 0"),
    ("probe_rows", 0, "an int >= 1"),
    ("max_list", 0, "None or an int >= 1"),
    ("nullable", 3, "'auto', 'none', or column names"),
    ("nullable", ["item_price", 1], "'auto', 'none', or column names"),
    ("executor", "spark", "one of ('lean', 'merlin')"),
    ("probe", "", "None or a path"),
])
def test_the_settings_refuse_a_bad_value_and_name_it(field, value, rule):
    from serving.settings import ExportSettings
    with pytest.raises(ValueError) as err:
        ExportSettings(**{field: value})
    message = str(err.value)
    assert message.startswith(f"The '{field}' parameter must be {rule}"), message
    assert message.endswith(f"Got {value!r} instead."), message


def test_the_settings_are_frozen_and_complete_their_instances():
    from serving.settings import STEPS, ExportSettings
    s = ExportSettings(instances={"calibrate": 3, "preprocess": 2}, nullable=["item_price"],
                       instance_kind=None)
    assert list(s.instances.items()) == [("preprocess", 2), ("predict", 1), ("calibrate", 3)]
    assert s.nullable == ("item_price",) and s.instance_kind is None
    assert ExportSettings().instances == {step: 1 for step in STEPS}
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.max_batch_size = 7


def test_both_command_lines_build_the_same_settings():
    """``from_args`` reads the options named like the fields; the federated command line has
    no ``--target`` (``cpu``); a bad ``--instances`` keeps its flag-named message."""
    from serving.settings import ExportSettings, add_repository_options
    parser = argparse.ArgumentParser()
    add_repository_options(parser)
    for name, default in (("--runtime", "onnx"), ("--tf-threads", 1), ("--probe", None),
                          ("--instance-kind", "auto")):
        parser.add_argument(name, default=default, type=type(default) if default else None)
    assert ExportSettings.from_args(parser.parse_args([])) == ExportSettings()
    args = parser.parse_args(["--max-batch-size", "7", "--instances", "predict=2",
                              "--queue-delay-us", "0", "--nullable", "none", "--max-list", "3",
                              "--executor", "merlin", "--runtime", "tf", "--tf-threads", "0",
                              "--instance-kind", "KIND_CPU"])
    assert ExportSettings.from_args(args) == ExportSettings(
        max_batch_size=7, instances={"predict": 2}, queue_delay_us=0, nullable="none",
        max_list=3, executor="merlin", runtime="tf", tf_threads=0, instance_kind="KIND_CPU")
    ngc = argparse.Namespace(**vars(args), target="ngc")
    assert ExportSettings.from_args(ngc).target == "ngc"
    with pytest.raises(ValueError, match="--instances"):
        ExportSettings.from_args(parser.parse_args(["--instances", "predict=0"]))


def test_the_federated_exports_refuse_the_ngc_target_before_writing(tmp_path):
    from serving.federated_export import FederatedRun, export_federated, export_media
    from serving.settings import ExportSettings
    ngc = ExportSettings(target="ngc")
    out = {"media": str(tmp_path / "media"), "advertiser": str(tmp_path / "adv")}
    with pytest.raises(ValueError, match="'target' parameter must be 'cpu'"):
        export_federated(FederatedRun(str(tmp_path / "run"), str(tmp_path / "fb")),
                         str(tmp_path / "wf"), out, settings=ngc)
    with pytest.raises(ValueError, match="'target' parameter must be 'cpu'"):
        export_media({}, str(tmp_path / "wf"), out["media"], ngc)
    with pytest.raises(ValueError, match="'out' parameter must be a mapping"):
        export_federated(FederatedRun("run", "fb"), "wf", {"media": out["media"]})
    assert not list(tmp_path.iterdir())
