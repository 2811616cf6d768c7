"""Checks of component names and parameters against their registries, with the key path in the error."""

from __future__ import annotations

from poisonlab.catalog import registry
from poisonlab.config.schema import Component, ExperimentConfig
from poisonlab.errors import ConfigError
from poisonlab.model_spec import check_factory_params, is_import_spec
from poisonlab.registry import check_params


BUILT_TO_CHECK = ("defenses", "poisons", "detectors")
"""Kinds whose components check their values in their constructor, built once here so that a bad value (a
poison's colour, a defense's ratios) is refused with its key path before the clean model trains, not after."""


def check_components(config: ExperimentConfig) -> None:
    """Raise ConfigError at the first unknown component name or parameter, naming its key path."""
    for path, kind, name, params in components(config):
        try:
            if kind == "aggregators":  # the rule's parameters and the non-finite guard's
                from poisonlab.fl.aggregators import check_rule_params

                check_rule_params(name, params)
                continue
            if kind == "models" and is_import_spec(name):  # the user's factory: imported and its params bound
                check_factory_params(name, params)
                continue
            entry = registry(kind).entry(name)
            check_params(f"{kind.rstrip('s')} '{name}'", entry.factory, params)
            if kind in BUILT_TO_CHECK:  # they check their values when built (cheap): refuse before any training
                entry.factory(**params)
        except ConfigError as err:
            raise ConfigError(f"{path}: {err}") from None
    check_rows_per_round(config)


def check_rows_per_round(config: ExperimentConfig) -> None:
    """Refuse, before any data is loaded, an aggregator that cannot aggregate a round of this federation
    (Krum: n > 2f + 2, Multi-Krum also m <= n - f, Bulyan: n >= 4f + 3; rules say so by a check_rows(n)).

    n is the most rows a round can have (resources.sampled_clients); a rule that fails at that n fails in
    every round, so no runnable config is refused.
    """
    fed = config.federated
    if fed is None:
        return
    from poisonlab.resources import sampled_clients

    n = sampled_clients(config)
    for path, kind, name, params in _listed("federated.aggregator", "aggregators", fed.aggregator_chain(),
                                            indexed=isinstance(fed.aggregator, list)):
        from poisonlab.fl.aggregators import build_rule

        rule = build_rule(name, params)
        try:
            rule.check_rows(n)
        except ConfigError as err:
            regrouped = "" if n == sampled_clients(config) else f"; {n} rows after the earlier steps' regrouping"
            raise ConfigError(f"{path.removesuffix('.name')}: {err} (n = updates a round, from federated.clients="
                              f"{fed.clients} and sample={fed.sample}{regrouped}); accepted: parameters that fit n,"
                              " or a larger sample") from None
        n = rule.rows_out(n)  # a step that regroups rows (bucketing) hands the next one fewer


def components(config: ExperimentConfig):
    """(key path, registry kind, name, params) for every named component in the config."""
    yield "data.dataset", "datasets", config.data.dataset, config.data.params
    model = config.model  # a user's factory takes input_shape and num_classes positionally: its own params only
    yield "model.name", "models", model.name, model.params if is_import_spec(model.name) else _model_params(model)
    yield from _listed("poison", "poisons", config.poison)
    yield from _listed("detect", "detectors", config.detect)
    yield from _listed("defend.defenses", "defenses", config.defend.defenses)
    fed = config.federated
    if fed is None:
        return
    if config.defend.defenses:
        raise ConfigError("defend.defenses: backdoor defenses run on centralized experiments (a trained model to"
                          " repair); accepted in a federated experiment: robust aggregators (federated.aggregator)")
    yield "federated.partition.name", "partitions", fed.partition.name, fed.partition.params
    chain = fed.aggregator_chain()
    yield from _listed("federated.aggregator", "aggregators", chain, indexed=isinstance(fed.aggregator, list))
    for i, adv in enumerate(fed.adversaries()):
        prefix = f"federated.adversary.{i}" if isinstance(fed.adversary, list) else "federated.adversary"
        if adv.poison is not None:
            yield f"{prefix}.poison.name", "poisons", adv.poison.name, adv.poison.params
        if adv.attack is not None:
            yield f"{prefix}.attack.name", "attacks", adv.attack.name, adv.attack.params


def _listed(prefix: str, kind: str, items: list[Component], indexed: bool = True):
    for i, c in enumerate(items):
        yield (f"{prefix}.{i}.name" if indexed else f"{prefix}.name"), kind, c.name, c.params


def _model_params(model: Component) -> dict:
    """Model params as make_model passes them (input_shape/num_classes come from the data)."""
    return {**model.params, "input_shape": (1,), "num_classes": 2}
