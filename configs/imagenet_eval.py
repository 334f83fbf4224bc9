"""DARTS's ImageNet evaluation in the mobile setting (DARTS sec. 3.4, its
release's ``cnn/train_imagenet.py``; XNAS sec. 4.2 retrains its cell the same
way): ``NetworkImageNet`` (two stride-2 stems, 14 cells at C=48, reductions at
1/3 and 2/3 of the depth, ImageNet's auxiliary head, a global 7x7 average
pool), 250 epochs, batch 128, SGD with momentum 0.9 from 0.1, decayed by 0.97
after every epoch, weight decay 3e-5, gradient clipping 5, label smoothing
0.1, auxiliary weight 0.4, no drop-path, flip augmentation.  The release's
random-resized crops and colour jitter are not reproduced.

The data are the user's class folders of 224x224 images (``folder:DIR``,
with ``DIR/train`` and ``DIR/test``):

  xnas-train --genotype darts_v2 --config configs/imagenet_eval.py \
      --config.dataset=folder:/data/imagenet224 --workdir /tmp/imagenet_eval
"""
import ml_collections

from xnas_jax import config_defaults


def get_config() -> ml_collections.ConfigDict:
  config = config_defaults.eval_config()
  config.space = "darts"
  config.network = "imagenet"
  config.dataset = "folder:/path/to/imagenet224"
  config.channels = 48
  config.num_cells = 14
  config.batch_size = 128
  config.epochs = 250
  config.learning_rate = 0.1
  config.lr_schedule = "exponential"
  config.lr_decay = 0.97
  config.momentum = 0.9
  config.nesterov = False
  config.weight_decay = 3e-5
  config.grad_clip = 5.0
  config.label_smoothing = 0.1
  config.aux_weight = 0.4
  config.drop_path_prob = 0.0
  config.augment = ml_collections.ConfigDict({"pad": 0, "flip": True, "cutout": 0})
  return config
