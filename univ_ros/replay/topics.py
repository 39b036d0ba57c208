"""Topic names and frames of the bags UNIV writes (``univ bag-from-pairs``, ``univ replay``).

Camera topics follow the usual driver layout (``<camera>/image_raw`` beside
``<camera>/camera_info``, as usb_cam, realsense2_camera and FLIR/Teledyne drivers publish);
ground truth lives under ``/ground_truth`` and the perception outputs under the node's name,
exactly as ``univ_perception`` publishes them, so an offline replay bag and a recording of the
live node look the same in Foxglove or RViz.
"""

RGB_IMAGE = '/camera/rgb/image_raw'  # sensor_msgs/Image rgb8
RGB_INFO = '/camera/rgb/camera_info'  # sensor_msgs/CameraInfo (uncalibrated: K all zero)
THERMAL_IMAGE = '/camera/thermal/image_raw'  # sensor_msgs/Image mono8 or mono16
THERMAL_INFO = '/camera/thermal/camera_info'  # sensor_msgs/CameraInfo
RGB_FRAME = 'camera_rgb_optical_frame'
THERMAL_FRAME = 'camera_thermal_optical_frame'

GT_RGB_DETECTIONS = '/ground_truth/rgb/detections'  # Detection2DArray, RGB image header
GT_THERMAL_DETECTIONS = '/ground_truth/thermal/detections'  # Detection2DArray, thermal header
GT_DETECTION_LABELS = '/ground_truth/detections/label_info'  # LabelInfo, one message
GT_SEGMENTATION = '/ground_truth/segmentation'  # Image mono8 class ids, 255 ignore; RGB header
GT_SEGMENTATION_LABELS = '/ground_truth/segmentation/label_info'  # LabelInfo, one message

NODE = '/univ_perception'
SEGMENTATION = f'{NODE}/segmentation'  # Image mono8 class ids (255 unlabeled)
SEGMENTATION_COLOR = f'{NODE}/segmentation/color'  # Image rgb8 class colours over the image
DETECTIONS = f'{NODE}/detections'  # Detection2DArray, class NAMES in class_id
DETECTIONS_IMAGE = f'{NODE}/detections/image'  # Image rgb8: boxes drawn over the image

IMAGE = 'sensor_msgs/msg/Image'
COMPRESSED_IMAGE = 'sensor_msgs/msg/CompressedImage'
# a camera topic's message type -> the node's transport for it (``rgb_transport`` ...)
CAMERA_TRANSPORTS = {IMAGE: 'raw', COMPRESSED_IMAGE: 'compressed'}
CAMERA_INFO = 'sensor_msgs/msg/CameraInfo'
DETECTION_ARRAY = 'vision_msgs/msg/Detection2DArray'
LABEL_INFO = 'vision_msgs/msg/LabelInfo'

TYPES = {
    RGB_IMAGE: IMAGE, RGB_INFO: CAMERA_INFO, THERMAL_IMAGE: IMAGE, THERMAL_INFO: CAMERA_INFO,
    GT_RGB_DETECTIONS: DETECTION_ARRAY, GT_THERMAL_DETECTIONS: DETECTION_ARRAY,
    GT_DETECTION_LABELS: LABEL_INFO, GT_SEGMENTATION: IMAGE, GT_SEGMENTATION_LABELS: LABEL_INFO,
    SEGMENTATION: IMAGE, SEGMENTATION_COLOR: IMAGE, DETECTIONS: DETECTION_ARRAY,
    DETECTIONS_IMAGE: IMAGE,
}
