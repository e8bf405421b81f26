"""What the package's launch files share: declare their arguments, build the node list from
`safefql_ros.description` once the arguments are known, end the launch with the node that
ends the run. Only launch files import this module (it needs `launch` and `launch_ros`,
which a full ROS 2 install has and the pip-only machines do not)."""
from __future__ import annotations

from typing import Callable

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction, Shutdown
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from safefql_ros.description import NodeDescription

Arguments = dict[str, tuple[str | None, str]]  # name: (default, None = required; description)


def launch_description(arguments: Arguments, setup: Callable[[dict[str, str]], list[NodeDescription]]):
    """A LaunchDescription that declares `arguments` and starts the nodes `setup` describes for
    their values (the same description `safefql-launch` starts, so both run the same thing)."""
    def nodes(context) -> list[Node]:
        values = {name: LaunchConfiguration(name).perform(context) for name in arguments}
        return [Node(**node.launch_kwargs(), **({"on_exit": Shutdown()} if node.ends_run else {}))
                for node in setup(values)]

    declared = [DeclareLaunchArgument(name, description=text, **({} if default is None else {"default_value": default}))
                for name, (default, text) in arguments.items()]
    return LaunchDescription([*declared, OpaqueFunction(function=nodes)])
