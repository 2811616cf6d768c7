"""poisonlab: a laboratory for poisoning attacks and defenses.

Data poisoning and backdoors in centralized training, model poisoning and
Byzantine-robust aggregation in federated learning. See README.md and docs/.
"""

from poisonlab.errors import ConfigError, DataError, PoisonlabError

__version__ = "0.1.0"
__all__ = ["ConfigError", "DataError", "PoisonlabError", "__version__"]
