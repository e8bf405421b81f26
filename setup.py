from glob import glob

from setuptools import find_packages, setup

package_name = 'safefql_ros'

setup(
    name=package_name,
    version='0.1.0',
    description='SafeFQL: offline safe controller learning (Safe Flow Q-Learning) '
                'and its ROS 2 node.',
    license='Apache-2.0',
    maintainer='safefql maintainers',
    maintainer_email='safefql@example.com',
    python_requires='>=3.10',
    # safefql_core, offline_train and safefql_ros (tests are not installed).
    packages=find_packages(exclude=['tests', 'tests.*']),
    # task_configs links to config/: the task YAMLs whose specs are the built-in ones (tasks.BUILTIN).
    # py.typed: safefql_core's annotations are checked (mypy.ini) and offered to its users (PEP 561).
    package_data={'safefql_core': ['py.typed', 'envs/*.npy', 'envs/*.yaml', 'task_configs/*.yaml']},
    include_package_data=False,
    data_files=[
        ('share/ament_index/resource_index/packages', ['resource/' + package_name]),
        ('share/' + package_name, ['package.xml']),
        ('share/' + package_name + '/launch', sorted(glob('launch/*.launch.py'))),
        ('share/' + package_name + '/config',
         sorted(glob('config/*.yaml') + glob('config/*.perspective'))),
    ],
    # Runtime dependencies are pinned in requirements.txt / constraints.txt (several are
    # ROS wheels or need --no-deps); they are deliberately not repeated here.
    install_requires=[],
    # 'rl': the velocity tasks' behaviour data (offline_train.collect trains SAC snapshots);
    # 2.3.2 is the last stable-baselines3 release that accepts gymnasium 0.28.1.
    extras_require={'test': ['pytest', 'pytest-timeout', 'hypothesis'], 'rl': ['stable-baselines3==2.3.2']},
    zip_safe=False,
    entry_points={
        'console_scripts': [
            'safefql-fit = offline_train.fit:main',
            'safefql-collect = offline_train.collect:main',
            'safefql-evaluate = offline_train.evaluate:main',
            'safefql-convert = offline_train.convert:main',
            'safefql-calibrate = offline_train.calibrate:main',
            'safefql-export = offline_train.export:main',
            'safefql-speed = offline_train.speed:main',
            'safefql-benchmark = offline_train.benchmark:main',
            'safefql-replay = offline_train.replay:main',
            'safefql-reference = offline_train.reference:main',
            'safefql-launch = safefql_ros.launcher:main',
            'safefql_controller = safefql_ros.controller:main',
            'boat_sim = safefql_ros.boat_sim:main',
            'diffdrive_sim = safefql_ros.diffdrive_sim:main',
            'safefql_recorder = safefql_ros.recorder:main',
            'safefql_player = safefql_ros.player:main',
            'episode_monitor = safefql_ros.episode_monitor:main',
            'safefql_lifecycle_manager = safefql_ros.lifecycle_manager:main',
        ],
    },
)
