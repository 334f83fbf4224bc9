"""NAS-Bench-201's training protocol on CIFAR-10 (Dong & Yang, 2020, sec. 2.4):
the genotype's ``TinyNetwork`` with C=16 and N=5 cells per stage, 200 epochs,
SGD with Nesterov momentum 0.9, learning rate 0.1 on a cosine schedule to 0,
weight decay 5e-4, batch 256, pad-4 crop and flip; no auxiliary head,
drop-path, cutout or label smoothing.  (The benchmark clips no gradient; the
clip here is set high enough never to act.)

  xnas-train --genotype '|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|' \
      --config configs/cifar10_nb201_eval.py --workdir /tmp/nb201_eval
"""
import ml_collections

from xnas_jax import config_defaults


def get_config() -> ml_collections.ConfigDict:
  config = config_defaults.eval_config()
  config.space = "nb201"
  config.dataset = "cifar10"
  config.channels = 16
  config.num_cells = 5
  config.batch_size = 256
  config.epochs = 200
  config.learning_rate = 0.1
  config.min_learning_rate = 0.0
  config.momentum = 0.9
  config.nesterov = True
  config.weight_decay = 5e-4
  config.grad_clip = 1e9
  config.aux_weight = 0.0
  config.drop_path_prob = 0.0
  config.label_smoothing = 0.0
  config.augment = ml_collections.ConfigDict({"pad": 4, "flip": True, "cutout": 0})
  return config
