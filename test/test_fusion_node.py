"""diffmf_fusion in this process: parameter validation and refusal, the latest-pair mailbox, and the
classical fallback when the model cannot load."""
from __future__ import annotations

import threading

import pytest

rclpy = pytest.importorskip("rclpy", reason="rclpy not installed")
fusion_node = pytest.importorskip("diffmf_ros.fusion_node", reason="diffmf_ros.msg not built (scripts/setup_env.sh)")

from rclpy.lifecycle import TransitionCallbackReturn  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402

pytestmark = pytest.mark.ros


def test_mailbox_keeps_only_the_newest_item_and_counts_drops():
    box = fusion_node.LatestMailbox()
    box.put(1)
    box.put(2)
    assert box.get() == 2 and box.dropped == 1
    got = []
    worker = threading.Thread(target=lambda: got.append(box.get()))
    worker.start()
    box.put(3)
    worker.join(5)
    assert got == [3]
    box.close()
    assert box.get() is None


def test_check_params_names_each_problem():
    values = {p.name: p.default for p in fusion_node.PARAMS}
    assert fusion_node.check_params(values) == []
    bad = {**values, "device": "gpu", "agc_low": 900.0, "agc_high": 100.0, "rgb_transport": "theora",
           "rgb_topic": values["thermal_topic"], "calibration_file": "no/such.yaml"}
    text = "; ".join(fusion_node.check_params(bad))
    for word in ("device", "agc_low", "rgb_transport", "must differ", "no such file"):
        assert word in text


@pytest.fixture
def make_node():
    context = rclpy.Context()
    rclpy.init(context=context)
    nodes = []

    def make(**overrides):
        node = fusion_node.FusionNode(context=context, parameter_overrides=[
            Parameter(k, value=v) for k, v in overrides.items()])
        nodes.append(node)
        return node

    yield make
    for node in nodes:
        node.stop()
        node.destroy_node()
    context.try_shutdown()


def test_invalid_start_values_are_refused(make_node):
    with pytest.raises(ValueError, match="device"):
        make_node(device="tpu")


def test_runtime_changes_are_validated_and_applied(make_node):
    node = make_node(fuser="classical", warmup=False)
    assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
    refused = node.set_parameters([Parameter("agc_low", value=70000.0)])[0]
    assert not refused.successful
    refused = node.set_parameters_atomically([Parameter("agc_low", value=500.0), Parameter("agc_high", value=100.0)])
    assert not refused.successful and "agc_low" in refused.reason
    read_only = node.set_parameters([Parameter("device", value="cpu")])[0]
    assert not read_only.successful
    assert node.set_parameters([Parameter("sync_slop_s", value=0.05)])[0].successful
    assert node._sync.slop_ns == 50_000_000
    assert node.set_parameters([Parameter("output_encoding", value="mono8")])[0].successful
    assert node._pipeline.output_encoding == "mono8"


def test_missing_weights_fall_back_to_the_classical_fuser(make_node, tmp_path):
    pytest.importorskip("diffmf_core.fuser", reason="diffmf_core.fuser not written yet")
    node = make_node(weights=str(tmp_path / "missing.safetensors"), device="cpu", fallback_fuser="mean")
    assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
    assert node._pipeline.mode == fusion_node.FusionInfo.MODE_CLASSICAL
    assert node._pipeline.active_name == "mean"
    assert "missing.safetensors" in node._pipeline.degraded_reason
