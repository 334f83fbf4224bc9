"""Defaults shared by the files in ``configs/`` (which only override them)."""
import ml_collections


def xnas_arch_optimizer() -> ml_collections.ConfigDict:
  """XNAS settings; ``learning_rate_<cell type>`` = None takes eq. 4's eta*."""
  return ml_collections.ConfigDict({
      "name": "xnas",
      "learning_rate_normal": ml_collections.FieldReference(None, field_type=float),
      "learning_rate_reduce": ml_collections.FieldReference(None, field_type=float),
      "grad_bound": 1.0,
      "zeta": 1.0,
      "per_example_rewards": True,
      # Used by the darts_adam / gd_softmax / drnas baselines only; a None
      # learning_rate takes the optimizer's released value (DARTS 3e-4, DrNAS 6e-4).
      "learning_rate": ml_collections.FieldReference(None, field_type=float),
      "b1": 0.5, "b2": 0.999, "weight_decay": 1e-3,
      # drnas: reg_type "l2" (Adam's decay at reg_scale, the released default)
      # or "kl" (reg_scale x KL(Dir(beta) || Dir(prior))).
      "reg_type": "l2", "reg_scale": 1e-3, "prior": 1.0,
      # Epochs of weight steps before the first architecture step; None: the
      # optimizer's own (DrNAS: a fifth of the epochs, 10 of 50 as released; else 0).
      "warmup_epochs": ml_collections.FieldReference(None, field_type=int),
      # SDARTS (xnas_jax.sdarts), for any optimizer with a mixture: the weight
      # step trains at the mixture perturbed by "random" noise or by PGD
      # ("adversarial"), of radius epsilon_min -> epsilon over the epochs.
      "perturb_mixture": "none", "epsilon": 0.3, "epsilon_min": 0.03, "pgd_steps": 7,
      # sgas (xnas_jax.sgas): one edge decided per cell type at the end of
      # epoch decision_start_epoch and every decision_interval epochs after
      # it (0-based); criterion 1, or 2 with history_size epochs of stability.
      "decision_start_epoch": 9, "decision_interval": 5, "sgas_criterion": 1, "history_size": 4,
  })


def hypergrad_options() -> ml_collections.ConfigDict:
  """Options of the ``arch_gradient`` estimators (``xnas_jax.hypergrad``)."""
  return ml_collections.ConfigDict({
      # darts_second_order: xi (None: the weight learning rate of the step).
      "inner_lr": ml_collections.FieldReference(None, field_type=float),
      "exact": True, "epsilon": 0.01,
      "coefficient": 0.1,  # amended: Bi et al.'s amending coefficient eta
      # implicit: (H + damping I)^-1 by "cg" or "neumann".
      "maxiter": 20, "damping": 1e-3, "solver": "cg", "neumann_lr": 0.01,
  })


def base_config() -> ml_collections.ConfigDict:
  """An XNAS search on digits with a small supernet."""
  config = ml_collections.ConfigDict()
  config.dataset = "digits"
  config.data_dir = ""
  config.limit = 0
  config.seed = 0
  config.num_seeds = 1  # K > 1: seeds seed..seed+K-1 as one vmapped search
  # The search space's family (xnas_jax.spaces): "darts" (op_set and
  # topology name its cell) or "nb201" (NAS-Bench-201; op_set "nb201").
  config.space = "darts"
  config.op_set = "xnas"
  config.topology = "darts"
  # "cell_type": one architecture per cell type, shared by its cells (DARTS);
  # "cell": every cell its own (Bi et al.'s S2; the darts space only).
  config.arch_sharing = "cell_type"
  config.channels = 8
  config.num_cells = 5
  config.batch_size = 32  # global: split over the devices
  config.num_devices = 0  # data parallel over this many devices; 0 = all
  config.epochs = 5
  # Drop an op from the compiled supernet once it is wiped on every edge of a
  # cell type (at the next epoch boundary; costs one compilation).
  config.rebuild_wiped = True
  # float32 | bfloat16: the dtype the supernet's gradient program computes in
  # (state, optimizers and the loss stay float32).
  config.compute_dtype = "float32"
  # auto | shifted | grouped | dense: how depthwise convolutions are computed
  # (xnas_jax.ops.depthwise_conv; "auto" is the measured choice per backend).
  config.depthwise_impl = "auto"
  # auto | shared | separate: whether the weight and architecture steps share
  # one gradient program (weights and mixture weights) or run one each that
  # differentiates only what the step uses: one more compilation for cheaper
  # steps.  "auto": separate for first-order searches of at least
  # STEP_PROGRAMS_MIN_STEPS architecture steps
  # (xnas_jax.search_setup.separate_step_programs).
  config.arch_grads_program = "auto"
  # PC-DARTS (xnas_jax.supernet, xnas_jax.edge_norm): partial_channels K > 1
  # sends C/K channels of every edge through its mixed op; edge_norm weighs
  # edges by a softmax of per-edge betas over each node's inputs (None: on
  # when K > 1, as PC-DARTS searches; False for DrNAS's partial channels),
  # trained by Adam with edge_norm_optimizer (PC-DARTS's architecture Adam).
  config.partial_channels = 1
  config.edge_norm = ml_collections.FieldReference(None, field_type=bool)
  config.edge_norm_optimizer = ml_collections.ConfigDict({
      "learning_rate": 6e-4, "b1": 0.5, "b2": 0.999, "weight_decay": 1e-3})
  # DrNAS's progressive search (xnas_jax.progressive): after epochs // 2,
  # prune every edge to its keep_ops strongest experts and widen the partial
  # channels from partial_channels to progressive.partial_channels.
  config.progressive = ml_collections.ConfigDict({
      "enabled": False, "partial_channels": 4, "keep_ops": 4})
  config.augment = ml_collections.ConfigDict({"pad": 1, "flip": False})
  config.weight_optimizer = ml_collections.ConfigDict({
      "learning_rate": 0.025, "min_learning_rate": 0.001, "momentum": 0.9,
      "weight_decay": 3e-4, "grad_clip": 5.0})
  config.arch_optimizer = xnas_arch_optimizer()
  # first_order | darts_second_order | amended | implicit (xnas_jax.hypergrad).
  config.arch_gradient = "first_order"
  config.hypergrad = hypergrad_options()
  # magnitude | perturbation (DARTS-PT, xnas_jax.perturbation).  pt: the
  # released schedule (rounds deciding an edge, then a node, of each cell
  # type; tune_epochs = its proj_intv between rounds; weights tuned by SGD
  # from learning_rate, None: the search's / 10, on a cosine schedule;
  # train_arch: architecture steps while tuning) or "per_decision".
  config.selection = "magnitude"
  # What a search leaves for a person to look at: TensorBoard event files
  # (workdir/tensorboard) and pictures (genotype.png/.svg of the cells,
  # report.png of the search's course); xnas_jax.events, xnas_jax.figures.
  config.tensorboard = True
  config.figures = True
  # A resource budget (xnas_jax.budget): metric "none" | "flops" (millions
  # of multiply-adds per image) | "params" (millions), of the evaluation
  # network of budget.channels and budget.num_cells at the data's image size;
  # the penalty weight * (E_u[cost] / target - 1)_+ joins the architecture
  # objective.
  config.budget = ml_collections.ConfigDict({
      "metric": "none", "target": 0.0, "weight": 1.0, "channels": 36, "num_cells": 20})
  config.pt = ml_collections.ConfigDict({
      "schedule": "released", "tune_epochs": 5, "train_arch": True,
      "learning_rate": ml_collections.FieldReference(None, field_type=float)})
  return config


def eval_config() -> ml_collections.ConfigDict:
  """Retraining a genotype (``xnas-train``): DARTS's evaluation protocol on digits.

  ``data_seed`` fixes the train/test split (the same for every retraining
  seed, so test accuracies of different seeds and genotypes are comparable);
  ``seed`` the initialization, data order, augmentation and drop-path.
  """
  config = ml_collections.ConfigDict()
  # The space family whose evaluation network retrains the genotype
  # (xnas_jax.spaces); "" takes the genotype's own.
  config.space = ""
  # The DARTS space's evaluation network: "cifar" (NetworkCIFAR) or
  # "imagenet" (NetworkImageNet, the mobile setting).
  config.network = "cifar"
  config.dataset = "digits"
  config.data_dir = ""
  config.limit = 0
  config.data_seed = 0
  config.seed = 0
  config.channels = 8
  config.num_cells = 8
  config.batch_size = 64  # global: split over the devices
  config.num_devices = 0  # 0 = all
  config.epochs = 20
  config.learning_rate = 0.025
  # "cosine" to min_learning_rate, or "exponential": x lr_decay every epoch.
  config.lr_schedule = "cosine"
  config.lr_decay = 0.97
  config.min_learning_rate = 0.0
  config.momentum = 0.9
  config.nesterov = True
  config.weight_decay = 3e-4
  config.grad_clip = 5.0
  config.aux_weight = 0.4  # 0 drops the auxiliary head
  config.drop_path_prob = 0.2
  config.label_smoothing = 0.1
  config.augment = ml_collections.ConfigDict({"pad": 1, "flip": False, "cutout": 2})
  config.tensorboard = True  # event files in workdir/tensorboard
  config.figures = True  # workdir/genotype.png, the retrained cells
  return config


def model_config(model: str = "xnas_jax.example_models:ChoiceCNN") -> ml_collections.ConfigDict:
  """An XNAS search of a user's own Flax model (space ``"model"``): ``model``
  names its class (``package.module:ClassName``), ``model_kwargs`` its
  keyword arguments; the cell keys (``op_set``, ``channels``, ``num_cells``)
  do not apply."""
  config = base_config()
  config.space = "model"
  config.model = model
  config.model_kwargs = ml_collections.ConfigDict()
  config.epochs = 10
  config.rebuild_wiped = False  # a wiped candidate costs nothing already (nn.cond)
  return config
