from glob import glob

from setuptools import find_packages, setup

package_name = 'deepseqslam_ros'

setup(
    name=package_name,
    version='0.1.0',
    packages=find_packages(exclude=['test', 'training', 'benchmarks']),
    data_files=[
        ('share/ament_index/resource_index/packages', ['resource/' + package_name]),
        ('share/' + package_name, ['package.xml']),
        ('share/' + package_name + '/launch', glob('launch/*.launch.py')),
        ('share/' + package_name + '/config', glob('config/*.yaml') + glob('config/*.xml')),
    ],
    install_requires=['setuptools'],
    zip_safe=True,
    maintainer='deepseqslam_ros maintainers',
    maintainer_email='maintainers@deepseqslam-ros.invalid',
    description='DeepSeqSLAM sequence-based place recognition for ROS 2',
    license='Apache-2.0',
    entry_points={
        'console_scripts': [
            'localizer = deepseqslam_ros.localizer_node:main',
            'deepseqslam-localizer = deepseqslam_ros.localizer_node:main',
            'deepseqslam-train = deepseqslam_ros.train:main',
            'deepseqslam-eval = deepseqslam_ros.evaluate:main',
            'deepseqslam-bag = deepseqslam_ros.bag:main',
        ],
    },
)
