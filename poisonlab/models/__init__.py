"""Models by name: ``make_model(name, input_shape, num_classes, seed, **params)``.

Small built-ins (``small.py``: logistic, mlp, cnn, cnn32; buffer-free, for vectorized federated
training) and a CIFAR-style zoo with batch norm (``resnet.py``: resnet18, preact_resnet18, resnet20;
``vgg.py``: vgg11_bn). Every model is built and initialised by ``build.py`` exactly as PyTorch would
initialise it, from an explicit seed.

Registration: the registry lives in the leaf module ``models/registry.py``; every model registers
itself with a decorator in its own file, and this package imports each of those files below, so
``MODELS`` is complete once ``poisonlab.models`` is imported. A new model is one factory with
``@MODELS.register(...)`` plus its import line here.
"""

from poisonlab.models.registry import MODELS
from poisonlab.models.build import build_seeded, init_parameters, make_model
from poisonlab.models.feature_layer import (FeatureExtractor, default_feature_layer, feature_module, features,
                                           features_with_grad, linear_head)
from poisonlab.models import resnet, small, vgg  # noqa: F401  (each registers its models)

__all__ = ["MODELS", "FeatureExtractor", "build_seeded", "default_feature_layer", "feature_module", "features", "features_with_grad",
           "init_parameters", "linear_head", "make_model"]
