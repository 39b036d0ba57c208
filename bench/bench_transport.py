"""Frame loss of full-size camera images over Fast DDS: default transports vs the shipped profile.

A camera process publishes RGB + thermal pairs at 30 Hz with sensor-data QoS (best effort,
keep last 5: what camera drivers use and the node subscribes with); a receiver process counts
the frames it gets (rclpy, two processes, localhost). Each case runs with Fast DDS's defaults
and with ``config/fastdds_large_images.xml`` (16 MiB shared-memory segments) set in both
processes. Frame loss = 1 - received / published, per camera.

usage: python bench/bench_transport.py [--seconds 20] [--json out.json]
"""

import argparse
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

PROFILE = Path(__file__).resolve().parents[1] / 'config' / 'fastdds_large_images.xml'
CASES = {  # name -> (height, width, thermal encoding)
    '640x480 rgb8 + mono8': (480, 640, 'mono8'),
    '640x512 rgb8 + mono16': (512, 640, 'mono16'),
}


def send(height: int, width: int, thermal_encoding: str, seconds: float) -> None:
    """The camera process: publish pairs at 30 Hz once the receiver is matched."""
    import numpy as np
    import rclpy
    from rclpy.node import Node
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import Image

    rclpy.init()
    node = Node('univ_bench_camera')
    rgb_pub = node.create_publisher(Image, 'bench/rgb', qos_profile_sensor_data)
    thermal_pub = node.create_publisher(Image, 'bench/thermal', qos_profile_sensor_data)
    rng = np.random.default_rng(0)
    rgb = Image(height=height, width=width, encoding='rgb8', step=3 * width)
    rgb.data = rng.integers(0, 256, height * width * 3, dtype=np.uint8).tobytes()
    depth = 2 if thermal_encoding == 'mono16' else 1
    thermal = Image(height=height, width=width, encoding=thermal_encoding, step=depth * width)
    thermal.data = rng.integers(0, 256, height * width * depth, dtype=np.uint8).tobytes()
    while rgb_pub.get_subscription_count() == 0 or thermal_pub.get_subscription_count() == 0:
        time.sleep(0.05)
    time.sleep(1.0)  # every endpoint discovered
    start = time.monotonic()
    for k in range(int(30 * seconds)):
        time.sleep(max(0.0, start + k / 30 - time.monotonic()))
        rgb.header.stamp.sec = thermal.header.stamp.sec = k
        rgb_pub.publish(rgb)
        thermal_pub.publish(thermal)
    time.sleep(1.0)
    node.destroy_node()
    rclpy.try_shutdown()


def receive(case: str, seconds: float) -> dict:
    """The receiver process: start the camera process, count frames until it ends."""
    import rclpy
    from rclpy.node import Node
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import Image

    rclpy.init()
    node = Node('univ_bench_receiver')
    got: dict[str, set] = {'rgb': set(), 'thermal': set()}
    for camera in got:
        node.create_subscription(Image, f'bench/{camera}',
                                 lambda m, c=camera: got[c].add(m.header.stamp.sec),
                                 qos_profile_sensor_data)
    height, width, encoding = CASES[case]
    camera = subprocess.Popen([sys.executable, __file__, '--send', str(height), str(width),
                               encoding, str(seconds)])
    while camera.poll() is None:
        rclpy.spin_once(node, timeout_sec=0.05)
    node.destroy_node()
    rclpy.try_shutdown()
    published = int(30 * seconds)
    return {camera: {'published': published, 'received': len(stamps),
                     'lost': 1 - len(stamps) / published} for camera, stamps in got.items()}


def run_case(case: str, seconds: float, profile: Path | None) -> dict:
    """One case in a fresh receiver process (the profile must be set before rclpy starts)."""
    env = dict(os.environ, ROS_DOMAIN_ID=str(random.SystemRandom().randint(101, 200)),
               ROS_AUTOMATIC_DISCOVERY_RANGE='LOCALHOST')
    env.pop('ROS_LOCALHOST_ONLY', None)
    env.pop('FASTRTPS_DEFAULT_PROFILES_FILE', None)
    if profile is not None:
        env['FASTRTPS_DEFAULT_PROFILES_FILE'] = str(profile)
    run = subprocess.run([sys.executable, __file__, '--receive', case, str(seconds)],
                         capture_output=True, text=True, env=env, timeout=seconds + 180)
    if run.returncode:
        raise RuntimeError(f'{case}: {run.stderr[-2000:]}')
    return json.loads(run.stdout.strip().splitlines()[-1])


def main() -> int:
    if sys.argv[1:2] == ['--send']:
        height, width, encoding, seconds = sys.argv[2:6]
        send(int(height), int(width), encoding, float(seconds))
        return 0
    if sys.argv[1:2] == ['--receive']:
        print(json.dumps(receive(sys.argv[2], float(sys.argv[3]))))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--seconds', type=float, default=20.0)
    parser.add_argument('--json', default=None)
    args = parser.parse_args()
    from common import print_header, save_json, table

    info = print_header('Frame loss of full-size images over Fast DDS at 30 Hz')
    rows, results = [], {}
    for case in CASES:
        for name, profile in (('Fast DDS defaults', None), ('fastdds_large_images.xml', PROFILE)):
            result = run_case(case, args.seconds, profile)
            results[f'{case}, {name}'] = result
            rows.append([case, name, result['rgb']['published'],
                         f"{result['rgb']['lost']:.1%}", f"{result['thermal']['lost']:.1%}"])
    print(f'sensor-data QoS (best effort, keep last 5), two processes on localhost, '
          f'{args.seconds:.0f} s per case\n')
    print(table(['pairs', 'transport', 'published per camera', 'RGB lost', 'thermal lost'],
                rows))
    save_json(args.json, {'machine': info, 'results': results})
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
