"""Test double of ``launch_ros.actions``."""

# Keyword arguments Humble's Node passes on to launch.actions.ExecuteProcess.
EXECUTE_PROCESS_KWARGS = {
    'output',
    'emulate_tty',
    'respawn',
    'respawn_delay',
    'sigterm_timeout',
    'sigkill_timeout',
    'prefix',
    'cwd',
    'env',
    'additional_env',
    'shell',
    'log_cmd',
    'on_exit',
    'condition',
}


class Node:
    """Records a launch_ros Node action (Humble signature)."""

    def __init__(
        self,
        *,
        executable,
        package=None,
        name=None,
        namespace=None,
        exec_name=None,
        parameters=None,
        remappings=None,
        ros_arguments=None,
        arguments=None,
        **kwargs,
    ) -> None:
        unknown = set(kwargs) - EXECUTE_PROCESS_KWARGS
        if unknown:
            raise TypeError(f'Node() got unexpected keyword arguments {sorted(unknown)}')
        self.executable = executable
        self.package = package
        self.name = name
        self.namespace = namespace
        self.exec_name = exec_name
        self.parameters = list(parameters or [])
        self.remappings = list(remappings or [])
        self.ros_arguments = ros_arguments
        self.arguments = arguments
        self.kwargs = kwargs
