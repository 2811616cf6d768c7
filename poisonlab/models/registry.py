"""MODELS: the model registry, by name.

A leaf module: it imports none of the models. Each model registers itself with a decorator in its
own file (``@MODELS.register("resnet18", reference=...)``), and ``poisonlab/models/__init__.py``
imports every such file, so the registry is complete as soon as anything in ``poisonlab.models`` is
imported. A factory takes ``(input_shape, num_classes, **params)`` and returns an ``nn.Module``; it is
built and initialised by :func:`poisonlab.models.build.make_model`, never called directly.
"""

from __future__ import annotations

from poisonlab.registry import Registry

MODELS = Registry("model")
