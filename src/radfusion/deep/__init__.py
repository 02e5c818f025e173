"""The deep-learning arms: 1ch and 2ch ResNets (MONAI), trained end to end.

``1ch`` sees the whole ultrasound image; ``2ch`` the image and its ROI mask
stacked on the same grid. After training, the global-average-pool features
(2048 for ResNet-50/101/152) of every case feed the feature selection and the
fusion models; the probabilities are the DL models' own predictions.

Entry point: :func:`run_deep_arm` (one arm, one run folder). Building blocks:
:func:`build_resnet` (networks), :func:`load_imagenet_weights` (local ImageNet
initialisation), :mod:`~radfusion.deep.inputs` (cached inputs),
:func:`train_network`, :func:`infer`, :func:`gradcam_map`.
"""

from radfusion.deep.arm import DeepArmResult, plot_history, read_deep_features, run_deep_arm
from radfusion.deep.features import InferenceOutput, feature_names, infer, resolve_device
from radfusion.deep.gradcam import gradcam_map, save_gradcam_overlay
from radfusion.deep.inputs import InputCache, InputSpec, network_input
from radfusion.deep.network import (
    NetworkSpec,
    load_network_spec,
    load_trained_network,
    predict_cases,
)
from radfusion.deep.networks import build_resnet, feature_dim, forward_with_features
from radfusion.deep.train import EpochRecord, TrainResult, train_network
from radfusion.deep.weights import WeightLoadReport, load_imagenet_weights, read_state_dict

__all__ = [
    "DeepArmResult",
    "EpochRecord",
    "InferenceOutput",
    "InputCache",
    "InputSpec",
    "NetworkSpec",
    "TrainResult",
    "WeightLoadReport",
    "build_resnet",
    "feature_dim",
    "feature_names",
    "forward_with_features",
    "gradcam_map",
    "infer",
    "load_imagenet_weights",
    "load_network_spec",
    "load_trained_network",
    "network_input",
    "plot_history",
    "predict_cases",
    "read_deep_features",
    "read_state_dict",
    "resolve_device",
    "run_deep_arm",
    "save_gradcam_overlay",
    "train_network",
]
