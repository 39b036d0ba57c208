"""ament_python package `univ_ros`: installs univ_core and univ_ros (colcon or pip)."""

from glob import glob

from setuptools import find_packages, setup

PACKAGE = 'univ_ros'

setup(
    name=PACKAGE,
    version='0.1.0',
    packages=find_packages(include=['univ_core', 'univ_core.*', 'univ_ros', 'univ_ros.*']),
    package_data={'univ_core': ['weights/*.safetensors', 'weights/*.json']},
    data_files=[
        ('share/ament_index/resource_index/packages', [f'resource/{PACKAGE}']),
        (f'share/{PACKAGE}', ['package.xml']),
        (f'share/{PACKAGE}/launch', glob('launch/*.launch.py')),
        (f'share/{PACKAGE}/config', glob('config/*.yaml') + glob('config/*.xml')),
    ],
    python_requires='>=3.10',
    # Pins live in requirements.txt (setup.sh installs them); these are the loose floors.
    install_requires=[
        'numpy>=1.24',
        'opencv-python-headless>=4.8',
        'pyyaml>=6',
        'safetensors>=0.4',
        'tqdm>=4.66',
        'rosbags>=0.10',
        'torch>=2.1',
        'torchvision>=0.16',
        'timm>=1.0',
        'peft>=0.11',
    ],
    zip_safe=True,
    maintainer='UNIV perception team',
    maintainer_email='univ@example.com',
    description='UNIV RGB + thermal perception: PCCL pre-training, heads, ROS 2 node, bag replay.',
    license='Apache-2.0',
    tests_require=['pytest'],
    entry_points={
        'console_scripts': [
            'perception_node = univ_ros.perception_node:main',
            'perception_lifecycle_node = univ_ros.lifecycle_node:main',
            'univ = univ_ros.cli:main',
        ],
    },
)
