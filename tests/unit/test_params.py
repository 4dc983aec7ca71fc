"""params.yaml's top level: unknown keys and a bad target_sparsity fail at load time, naming the key."""
import pytest
import yaml

from hp.errors import ConfigError
from hp.params import TOP_LEVEL, load_params, sparsity_tolerance, target_sparsity

ROOT_PARAMS = "params.yaml"


def write(tmp_path, **changes):
    params = yaml.safe_load(open(ROOT_PARAMS))
    params.update(changes)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    return path


def test_the_committed_params_load_and_use_only_known_groups():
    params = load_params(ROOT_PARAMS)
    assert set(params) <= set(TOP_LEVEL) and target_sparsity(params) == params["target_sparsity"]


def test_unknown_top_level_key_is_named(tmp_path):
    path = write(tmp_path, target_sparsty=0.5)  # the misspelling used to run the baseline and exit 0
    with pytest.raises(ConfigError, match=r"params.yaml: unknown top-level key 'target_sparsty' \(known: "):
        load_params(path)


@pytest.mark.parametrize("value", ["abc", True, None, 1.0, -0.1, 1.5])
def test_target_sparsity_must_be_a_number_in_range(tmp_path, value):
    with pytest.raises(ConfigError, match=r"params.yaml: target_sparsity must be a number in \[0, 1\), got "
                                          + repr(value).replace("(", r"\(").replace(".", r"\.")):
        load_params(write(tmp_path, target_sparsity=value))


@pytest.mark.parametrize("value", [0, 0.0, 0.7, 0.95])
def test_valid_targets_load(tmp_path, value):
    assert target_sparsity(load_params(write(tmp_path, target_sparsity=value))) == value


@pytest.mark.parametrize("value", ["abc", True, -0.01, 1.0])
def test_sparsity_tolerance_must_be_a_number_in_range_or_null(tmp_path, value):
    with pytest.raises(ConfigError, match=r"params.yaml: sparsity_tolerance must be a number in \[0, 1\) or null, "
                                          r"got " + repr(value).replace(".", r"\.")):
        load_params(write(tmp_path, sparsity_tolerance=value))


@pytest.mark.parametrize("value", [None, 0, 0.01, 0.2])
def test_valid_tolerances_load(tmp_path, value):
    assert sparsity_tolerance(load_params(write(tmp_path, sparsity_tolerance=value))) == value


@pytest.mark.parametrize("key,value,message", [
    ("target_measure", "flops", "target_measure must be one of params, macs, got 'flops'"),
    ("target_measure", None, "target_measure must be one of params, macs, got None"),
    ("macs_reference_seconds", 0, "macs_reference_seconds must be a positive number, got 0"),
    ("macs_reference_seconds", "4", "macs_reference_seconds must be a positive number, got '4'"),
    ("macs_reference_seconds", True, "macs_reference_seconds must be a positive number, got True"),
])
def test_target_measure_and_its_length_are_checked_at_load(tmp_path, key, value, message):
    with pytest.raises(ConfigError, match=f"params.yaml: {message}"):
        load_params(write(tmp_path, **{key: value}))


def test_target_measure_reads_both_keys(tmp_path):
    from hp.measure import Measure
    from hp.params import target_measure

    assert target_measure(load_params(ROOT_PARAMS)) == Measure("params", 4.0)  # the paper's measure by default
    params = load_params(write(tmp_path, target_measure="macs", macs_reference_seconds=2))
    assert target_measure(params) == Measure("macs", 2.0) and Measure("macs", 2.0).samples == 32000
    with pytest.raises(ConfigError, match="params.yaml: missing key macs_reference_seconds"):
        target_measure({"target_measure": "macs"})
