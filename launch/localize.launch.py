"""ros2 launch deepseqslam_ros localize.launch.py checkpoint:=/path/model.pt image_topic:=/camera/image_raw"""
import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

ARGUMENTS = {
    'image_topic': ('/camera/image_raw', 'camera topic'),
    'odom_topic': ('', 'odometry topic; empty = vision-only'),
    'checkpoint': ('', 'checkpoint from deepseqslam-train'),
    'device': ('auto', 'auto, cpu or cuda'),
    'map_mode': ('localize', 'localize or online'),
}


def generate_launch_description():
    params_file = os.path.join(get_package_share_directory('deepseqslam_ros'), 'config', 'localize.yaml')
    arguments = [DeclareLaunchArgument(name, default_value=default, description=text)
                 for name, (default, text) in ARGUMENTS.items()]
    arguments.append(DeclareLaunchArgument('params_file', default_value=params_file,
                                           description='parameters YAML'))
    node = Node(
        package='deepseqslam_ros',
        executable='localizer',
        name='deepseqslam_localizer',
        output='screen',
        parameters=[LaunchConfiguration('params_file'),
                    {name: LaunchConfiguration(name) for name in ARGUMENTS}],
    )
    return LaunchDescription([*arguments, node])
