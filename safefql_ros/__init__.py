"""safefql_ros: the thin rclpy adapter around ``safefql_core``.

This package holds only the ROS 2 glue: the controller, the boat simulator, the bag
recorder and player, the episode monitor, and the launcher with its node description. All
algorithmic and runtime logic lives in the ROS-free ``safefql_core``.

A node started as ``python -m safefql_ros.<node>`` (how the launcher starts each one) spends
seconds importing before it installs its own signal handling (node_tools.start_node). When
the launcher stops it in that window, because another node failed, Python's default
KeyboardInterrupt would bury the real error under a traceback of whatever was importing; the
node exits quietly with 130 (interrupted) instead. ``sys.argv[0]`` is ``-m`` only while
runpy imports the package of the module it was asked to run, so an ordinary import (tests,
the launcher itself) leaves the interpreter's handler alone.
"""
import signal
import sys

if sys.argv[:1] == ["-m"]:
    signal.signal(signal.SIGINT, lambda *_: sys.exit(130))
