"""The managed node through the real lifecycle services (lifecycle_msgs ChangeState / GetState).

The lifecycle node runs in a subprocess; this process drives configure, activate, deactivate
(the model is released: the node checks with a weak reference that the Predictor was freed),
activate again (reloaded), cleanup and shutdown, and feeds it JPEG CompressedImage RGB (the
``compressed`` transport) with raw mono8 thermal, 640x480.
"""

import time

import cv2
import pytest
from lifecycle_msgs.msg import Transition
from lifecycle_msgs.srv import ChangeState, GetState
from perception_rig import (
    DEADLINE,
    RGB_FRAME,
    THERMAL_FRAME,
    image_msg,
    load_pairs,
    running,
    stream,
)
from rcl_interfaces.msg import Parameter, ParameterType, ParameterValue, SetParametersResult
from rcl_interfaces.srv import SetParameters
from sensor_msgs.msg import CompressedImage

SERVICE = 'univ_perception/'


@pytest.fixture(scope='module')
def cameras(data_dir) -> list[tuple[CompressedImage, object]]:
    pairs = []
    for rgb, ir in load_pairs(data_dir, 4, 'msrs'):
        jpeg = CompressedImage(format='rgb8; jpeg compressed bgr8')
        jpeg.header.frame_id = RGB_FRAME
        jpeg.data = cv2.imencode('.jpg', cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))[1].tobytes()
        pairs.append((jpeg, image_msg(ir, 'mono8', THERMAL_FRAME)))
    return pairs


def state(rig) -> str:
    return rig.call(GetState, SERVICE + 'get_state', GetState.Request()).current_state.label


def transition(rig, transition_id: int) -> None:
    request = ChangeState.Request(transition=Transition(id=transition_id))
    assert rig.call(ChangeState, SERVICE + 'change_state', request).success, transition_id


def set_parameter(rig, name: str, value: str) -> SetParametersResult:
    request = SetParameters.Request(parameters=[Parameter(name=name, value=ParameterValue(
        type=ParameterType.PARAMETER_STRING, string_value=value))])
    return rig.call(SetParameters, SERVICE + 'set_parameters', request).results[0]


def test_lifecycle_loads_runs_releases_and_reloads_the_model(toy_model, cameras,
                                                              tmp_path) -> None:
    with running('managed', toy_model, tmp_path, harness_args=('--managed',), wait=False,
                 rig_kwargs={'rgb_type': CompressedImage},
                 rgb_transport='compressed') as (node, rig):
        assert state(rig) == 'unconfigured'
        assert set_parameter(rig, 'device', 'gpu').successful  # a typo: configure fails...
        request = ChangeState.Request(transition=Transition(
            id=Transition.TRANSITION_CONFIGURE))
        assert not rig.call(ChangeState, SERVICE + 'change_state', request).success
        node.wait_for_log("configure failed: device: expected auto, cpu, cuda or cuda:N, got 'gpu")
        assert state(rig) == 'unconfigured'
        assert set_parameter(rig, 'device', 'cpu').successful  # ...and works once fixed
        transition(rig, Transition.TRANSITION_CONFIGURE)
        assert state(rig) == 'inactive'
        node.wait_for_log('model loaded and warmed up')
        inactive = rig.wait_for_status(lambda v: v['state'] == 'inactive', 'inactive status')
        assert inactive['model'] == 'loaded'
        assert [c.class_name for c in rig.late_label_info().class_map][:2] == [
            'unlabeled', 'car']
        assert rig.rgb_pub.get_subscription_count() == 0  # configured, not subscribed
        refused = set_parameter(rig, 'mode', 'rgb')  # read at configure: refused while configured
        assert not refused.successful and 'cleanup' in refused.reason, refused.reason

        transition(rig, Transition.TRANSITION_ACTIVATE)
        rig.wait_for_node(node)
        # stream until a status says 'fused' (on a loaded CPU the first ones may lag), then
        # wait for outputs: by then the silent cameras may already have made it 'waiting'
        deadline = time.monotonic() + DEADLINE
        while not any(v['state'] == 'fused' for _, v in rig.statuses()):
            assert time.monotonic() < deadline, 'never fused while both cameras streamed'
            stream(rig, 1.0, lambda i: cameras[i % 4])
        rig.wait_for_status(lambda v: int(v['pairs_processed']) > 0, 'outputs')
        rig.wait_until(lambda: rig.outputs['segmentation'].messages, DEADLINE, 'masks')
        first_run = len(rig.outputs['segmentation'].messages)
        assert first_run > 0 and all(m.header.frame_id == RGB_FRAME and m.width == 640
                                     for m in rig.outputs['segmentation'].messages)

        transition(rig, Transition.TRANSITION_DEACTIVATE)
        assert state(rig) == 'inactive'
        released = node.wait_for_log(r'model released: predictor freed (\w+)')
        assert released.group(1) == 'True', 'something still holds the Predictor'
        status = rig.wait_for_status(lambda v: v['state'] == 'inactive', 'inactive again')
        assert status['model'] == 'released'
        rig.wait_until(lambda: rig.rgb_pub.get_subscription_count() == 0, 30, 'unsubscribed')
        # outputs of pairs still in flight at deactivation have arrived by now (inactive status)
        first_run = len(rig.outputs['segmentation'].messages)
        stream(rig, 1.0, lambda i: cameras[i % 4])  # nobody listens: no inference
        rig.wait_for_status(lambda v: v['state'] == 'inactive', 'inactive after the stream')
        assert len(rig.outputs['segmentation'].messages) == first_run

        transition(rig, Transition.TRANSITION_ACTIVATE)  # reloads the model
        assert node.log().count('model loaded and warmed up') == 2
        rig.wait_for_node(node)
        stream(rig, 2.0, lambda i: cameras[i % 4])
        rig.wait_until(lambda: len(rig.outputs['segmentation'].messages) > first_run, 60,
                       'outputs after the second activation')

        transition(rig, Transition.TRANSITION_DEACTIVATE)
        transition(rig, Transition.TRANSITION_CLEANUP)
        assert state(rig) == 'unconfigured'
        assert set_parameter(rig, 'mode', 'rgb').successful  # unconfigured: taken at configure
        transition(rig, Transition.TRANSITION_CONFIGURE)
        node.wait_for_log('configured: mode rgb')
        transition(rig, Transition.TRANSITION_CLEANUP)
        transition(rig, Transition.TRANSITION_UNCONFIGURED_SHUTDOWN)
        assert state(rig) == 'finalized'
    assert node.log().count('model released: predictor freed True') == 3
