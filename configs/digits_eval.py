"""Retraining a genotype on digits: 8 cells, 8 channels, 20 epochs (a few
minutes on two CPU cores).

  xnas-train --genotype /tmp/xnas_digits/genotype.json --config configs/digits_eval.py \
      --workdir /tmp/xnas_digits_eval
"""
import ml_collections

from xnas_jax import config_defaults


def get_config() -> ml_collections.ConfigDict:
  return config_defaults.eval_config()
