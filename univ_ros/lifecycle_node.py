"""``univ_perception`` as a managed (lifecycle) node: the GPU model loads and unloads on command.

Transitions (``ros2 lifecycle set /univ_perception <transition>``, or launch's auto-start):

- configure: load the model and warm it up (kernels, allocator); publishers and LabelInfo;
- activate: (reload the model if deactivate released it) subscribe to the cameras, start the
  worker;
- deactivate: unsubscribe, stop inference (the job in hand finishes), release the model and
  return the freed device memory (``torch.cuda.empty_cache``); diagnostics go on ('inactive');
- cleanup / shutdown: also remove publishers and timers.

Parameters are declared at construction (no model yet), so ``ros2 param`` works before
configure. The ones the plain node declares read-only (model, topics, mode, ...) can be set
while the node is unconfigured and take effect at the next configure; while it is configured
a change is refused with the reason (cleanup first). A transition that fails (a missing model,
a bad QoS override, CUDA out of memory) logs why and undoes what it had set up.
"""

import gc
import sys
import weakref
from typing import Any

from rcl_interfaces.msg import SetParametersResult
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn

from univ_ros.messages import silent_outputs
from univ_ros.params import PARAM_SPECS, declare_node_params
from univ_ros.perception_node import (
    NODE_NAME,
    Loader,
    PerceptionIO,
    default_loader,
    error_text,
    load_predictor_for,
    on_set_parameters,
    spin_node,
    start_line,
    usage,
    wants_help,
)

WARMUP_RUNS = 1
AT_CONFIGURE = frozenset(s.name for s in PARAM_SPECS if s.read_only)  # read at configure only


class PerceptionLifecycleNode(LifecycleNode):
    """The perception node with the managed-node life cycle (``load`` injectable for tests)."""

    def __init__(self, load: Loader = default_loader, **node_kwargs: Any) -> None:
        super().__init__(NODE_NAME, **node_kwargs)
        self._load = load
        self.params = declare_node_params(self, configurable=True)
        self.predictor: Any = None
        self.io: PerceptionIO | None = None  # set from configure to cleanup
        self.add_on_set_parameters_callback(self._on_set_parameters)

    def _on_set_parameters(self, parameters: list[Any]) -> SetParametersResult:
        """Dynamic ones apply at once; configure-time ones only while unconfigured."""
        fixed = sorted(p.name for p in parameters if p.name in AT_CONFIGURE)
        if fixed and self.io is not None:
            return SetParametersResult(successful=False, reason=(
                f'{", ".join(fixed)}: read at configure; clean the node up first (ros2 '
                f'lifecycle set {self.get_fully_qualified_name()} cleanup), set it, configure'))
        return on_set_parameters(self, parameters)

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Load the model, warm it up, create the publishers."""
        try:
            self.params = declare_node_params(self, configurable=True)  # set while unconfigured
            self._load_model()
            self.io = PerceptionIO(self, self.params, self.predictor)
        except Exception as err:  # rclpy would drop it unlogged
            return self._failed('configure', err, self._teardown)
        self.get_logger().info(f'configured: {start_line(self.params, self.predictor)}')
        if (note := silent_outputs(self.predictor)) is not None:
            self.get_logger().warn(note)
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Subscribe and start inference (reloading the model after a deactivate)."""
        try:
            if self.predictor is None:
                self._load_model()
            self.io.model_state = 'loaded'
            self.io.start(self.predictor)
        except Exception as err:  # rclpy would drop it unlogged
            return self._failed('activate', err, self._deactivate)
        self.get_logger().info('activated: subscribed to the cameras')
        return TransitionCallbackReturn.SUCCESS

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Unsubscribe, stop inference, release the model and its device memory."""
        self._deactivate()
        return TransitionCallbackReturn.SUCCESS

    def on_error(self, state: LifecycleState) -> TransitionCallbackReturn:
        """A transition raised: release everything; the node is then unconfigured."""
        self.get_logger().error(f'error while {state.label}: releasing the model and outputs')
        self._teardown()
        return TransitionCallbackReturn.SUCCESS

    def _failed(self, transition: str, err: Exception, undo: Any) -> TransitionCallbackReturn:
        """Log why ``transition`` failed, undo its half-done work, report FAILURE."""
        self.get_logger().error(f'{transition} failed: {error_text(err)}')
        undo()
        return TransitionCallbackReturn.FAILURE

    def _deactivate(self) -> None:
        if self.io is not None:
            self.io.stop()
        self._release_model()

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Back to unconfigured: publishers and timers removed, model released."""
        self._teardown()
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Finalize from any primary state."""
        self._teardown()
        return TransitionCallbackReturn.SUCCESS

    def _load_model(self) -> None:
        self.predictor = load_predictor_for(self, self.params, self._load)
        seconds = self.predictor.warmup(runs=WARMUP_RUNS)
        self.get_logger().info(f'model loaded and warmed up in {seconds:.1f} s')

    def _release_model(self) -> None:
        """Drop the Predictor; log whether it was freed and the device memory left."""
        from univ_core.inference.device_memory import allocated_mb, release_cached

        if self.predictor is None:
            return
        device, alive = str(self.predictor.device), weakref.ref(self.predictor)
        self.predictor = None
        gc.collect()
        release_cached(device)
        if self.io is not None:
            self.io.model_state = 'released'
        freed = alive() is None
        text = (f'model released: predictor freed {freed}, {allocated_mb(device):.0f} MB '
                f'still allocated on {device}')
        if freed:
            self.get_logger().info(text)
        else:
            self.get_logger().warning(text + ' (something still holds the model)')

    def _teardown(self) -> None:
        if self.io is not None:
            self.io.destroy()
        self._release_model()
        self.io = None

    def destroy_node(self) -> None:
        """Stop inference and release everything, then the node."""
        self._teardown()
        super().destroy_node()


def main(args: list[str] | None = None, load: Loader = default_loader) -> int:
    """Entry point ``perception_lifecycle_node``: init, spin, always shut down."""
    argv = sys.argv[1:] if args is None else args
    if wants_help(argv):
        print(usage('perception_lifecycle_node') + '\n\nA managed node: configure loads the '
              'model, activate subscribes (ros2 lifecycle set /univ_perception configure).')
        return 0
    return spin_node(lambda: PerceptionLifecycleNode(load), args)


if __name__ == '__main__':
    sys.exit(main())
