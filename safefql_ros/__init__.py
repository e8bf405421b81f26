"""safefql_ros: the thin rclpy adapter around ``safefql_core``.

This package holds only the ROS 2 glue (controller, boat simulator, bag recorder/player and
bringup nodes); all algorithmic and runtime logic lives in the ROS-free ``safefql_core``.
The nodes arrive later.
"""
