"""QoS profiles shared by the nodes (ROS_CONVENTIONS.md): latched state, reliable commands."""
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy

# Transient local, depth 1: a late subscriber (rqt, a test) still gets the current value.
LATCHED_QOS = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                         durability=DurabilityPolicy.TRANSIENT_LOCAL)
