"""safefql_ros: the thin rclpy adapter around ``safefql_core``.

This package holds only the ROS 2 glue: the controller, the boat simulator, the bag
recorder and player, the episode monitor, and the launcher with its node description. All
algorithmic and runtime logic lives in the ROS-free ``safefql_core``.
"""
