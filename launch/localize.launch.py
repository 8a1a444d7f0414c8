"""ros2 launch deepseqslam_ros localize.launch.py checkpoint:=/path/model.pt image_topic:=/camera/image_raw

The node reads `params_file` (default: the package's config/localize.yaml); a launch argument
overrides it only when it is given (an empty value means "not given"). `use_sim_time:=true` puts the
node on the /clock that `ros2 bag play --clock` publishes; `namespace:=robot1` puts it and its topics
under /robot1 (relative topic names such as `image_topic:=camera/image_raw` resolve there too).
"""
import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

ARGUMENTS = {
    'image_topic': 'camera topic',
    'odom_topic': 'odometry topic (vision-only when neither this nor the params file names one)',
    'checkpoint': 'checkpoint from deepseqslam-train',
    'device': 'auto, cpu, cuda or cuda:N',
    'map_mode': 'localize or online',
}
BOOLEANS = {'true': True, 'false': False}   # use_sim_time


def _node(context):
    given = {name: context.launch_configurations[name] for name in ARGUMENTS
             if context.launch_configurations.get(name, '')}
    sim_time = context.launch_configurations.get('use_sim_time', '').lower()
    if sim_time:
        if sim_time not in BOOLEANS:
            raise ValueError(f'use_sim_time must be true or false, not {sim_time!r}')
        given['use_sim_time'] = BOOLEANS[sim_time]
    return [Node(package='deepseqslam_ros', executable='localizer', name='deepseqslam_localizer', output='screen',
                 namespace=context.launch_configurations.get('namespace', ''),
                 parameters=[LaunchConfiguration('params_file').perform(context), given])]


def generate_launch_description():
    params_file = os.path.join(get_package_share_directory('deepseqslam_ros'), 'config', 'localize.yaml')
    arguments = [DeclareLaunchArgument(name, default_value='', description=f'{text} (default: the params file\'s)')
                 for name, text in ARGUMENTS.items()]
    arguments.append(DeclareLaunchArgument('params_file', default_value=params_file, description='parameters YAML'))
    arguments.append(DeclareLaunchArgument('use_sim_time', default_value='',
                                           description='true: follow /clock (bag replay with --clock)'))
    arguments.append(DeclareLaunchArgument('namespace', default_value='', description='e.g. robot1 (multi-robot)'))
    return LaunchDescription([*arguments, OpaqueFunction(function=_node)])
