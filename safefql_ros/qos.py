"""QoS profiles shared by the nodes (ROS_CONVENTIONS.md): latched state, reliable commands."""
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy

# Transient local, depth 1: a late subscriber (rqt, a test) still gets the current value.
LATCHED_QOS = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                         durability=DurabilityPolicy.TRANSIENT_LOCAL)

# The same for a reader that must see every value, not only the latest: an executor stalled
# for longer than two announcements (a 0.4 s episode on a loaded machine) would otherwise find
# only the last in its depth-1 queue. A late reader still gets just the publisher's latest.
LATCHED_EVERY_QOS = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE,
                               durability=DurabilityPolicy.TRANSIENT_LOCAL)
