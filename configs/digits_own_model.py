"""XNAS search of a user's own Flax model on digits (space "model").

``model`` names the model's class and ``model_kwargs`` its arguments; here
the example ``ChoiceCNN`` (``xnas_jax/example_models.py``: three layers, each
a choice of conv 3x3, conv 5x5, separable conv or identity, and a choice of
skip input):

  xnas-search --config configs/digits_own_model.py --workdir /tmp/own_model
  xnas-search --config configs/digits_own_model.py --workdir /tmp/own_model_darts \\
      --config.arch_optimizer.name=darts_adam
  xnas-train --config configs/digits_eval.py --genotype /tmp/own_model/genotype.json \\
      --workdir /tmp/own_model_eval

Another model: ``--config.model=package.module:ClassName`` (importable from
where the command runs), with its arguments under ``model_kwargs`` in a
config file of one's own.
"""
import ml_collections

from xnas_jax import config_defaults


def get_config() -> ml_collections.ConfigDict:
  config = config_defaults.model_config("xnas_jax.example_models:ChoiceCNN")
  config.model_kwargs = ml_collections.ConfigDict({"features": 16, "num_layers": 3})
  return config
