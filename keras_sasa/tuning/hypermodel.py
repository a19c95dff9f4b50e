"""`SASAHyperModel`: a keras-tuner `HyperModel` over the paper's design space.

Every trial is a `keras_sasa.training.TrainConfig` (the search's base configuration with
the trial's hyperparameters, see `SearchSpace`), built, compiled and trained by the same
functions as `python -m keras_sasa train`: `make_datasets`, `build_model`,
`compile_model` and the paper's recipe (Nesterov SGD, warm-up and cosine decay, EMA of
the weights, evaluated with the EMA weights).
"""

import keras
import keras_tuner

from keras_sasa import _validation as validation
from keras_sasa import data
from keras_sasa import distribute
from keras_sasa import training
from keras_sasa.training import callbacks as run_callbacks
from keras_sasa.training import recipe
from keras_sasa.training.run import first_images
from keras_sasa.training.run import fit_verbosity
from keras_sasa.tuning import space as space_module


class SASAHyperModel(keras_tuner.HyperModel):
    """A SASA-ResNet whose architecture and recipe are hyperparameters.

    `build(hp)` declares the hyperparameters of `space` in `hp` and returns the compiled
    model of the trial's configuration; `fit(hp, model, **kwargs)` trains it on the
    configuration's data pipelines and returns the `History`, whose `val_accuracy` is
    the usual objective. Keyword arguments of `fit` (those of `Tuner.search`, and the
    `epochs` and `initial_epoch` that Hyperband sets) are forwarded to `Model.fit`.

    Args:
        config: the base `keras_sasa.training.TrainConfig` (data set, model depth,
            epochs, batch size, seed, ...). The fields of the search space are replaced
            by each trial's values. Defaults to `TrainConfig()` (digits, offline).
        space: a `SearchSpace`. Defaults to `SearchSpace()`, the paper's ablations.
        validation_split: the share of the training split held out for validation
            (the paper reports its ablations on a held-out part of the training data),
            in [0.01, 0.99], rounded to a whole percent; the model trains on the rest
            (`config.test_split` is not used). None validates on
            `config.test_split` (the data set's evaluation split by default) and
            trains on `config.train_split`.
        strategy: the `tf.distribute.Strategy` the tuner builds the models under (its
            `distribution_strategy`). None: `keras_sasa.distribute.get_strategy(
            config.strategy, config.tpu)` when first needed.
        name: the hypermodel's name.

    Example:

    >>> hypermodel = SASAHyperModel(
    ...     TrainConfig(epochs=3), SearchSpace(kernel_size=(3, 5), num_heads=4)
    ... )
    >>> tuner = keras_tuner.RandomSearch(hypermodel, "val_accuracy", max_trials=4)
    >>> tuner.search(verbose=0)
    """

    def __init__(
        self,
        config=None,
        space=None,
        validation_split=0.2,
        strategy=None,
        name="sasa_resnet",
    ):
        super().__init__(name=name, tunable=True)
        config = training.TrainConfig() if config is None else config
        if not isinstance(config, training.TrainConfig):
            raise validation.error("config", config, "Expected a TrainConfig", TypeError)
        space = space_module.SearchSpace() if space is None else space
        if not isinstance(space, space_module.SearchSpace):
            raise validation.error("space", space, "Expected a SearchSpace", TypeError)
        if validation_split is not None:
            training.config.check_validation_split(validation_split, config.train_split)
        training.config.check(config)
        self.base_config = config
        self.search_space = space
        self.validation_split = validation_split
        self._strategy = strategy
        self._prepared = None

    @property
    def strategy(self):
        if self._strategy is None:
            config = self.base_config
            self._strategy = distribute.get_strategy(config.strategy, config.tpu)
        return self._strategy

    def prepare(self):
        """Resolves the configuration and the space for the data; returns them.

        Reads the data set's description (preparing digits, or downloading a TFDS data
        set on first use) and counts the training steps of an epoch. Called by the first
        `build`; call it early to see configuration errors before a search starts.

        Returns:
            `(config, space, info, steps_per_epoch)`: the resolved base `TrainConfig`,
            the resolved `SearchSpace`, the data set's `ImageDatasetInfo` and the
            training steps of one epoch.

        Raises:
            ValueError: a bad configuration or space for this data set.
        """
        if self._prepared is None:
            config = self.base_config
            info = data.dataset_info(config.dataset, data_dir=config.data_dir, download=True)
            if self.validation_split is not None:
                train_split, held_out = training.config.held_out_splits(
                    config.train_split or info.train_split, self.validation_split
                )
                config = config.replace(train_split=train_split, test_split=held_out)
            config = training.resolve(config, info)
            resolved_space = self.search_space.resolve(config)
            _, _, steps_per_epoch = training.make_datasets(config, info, self.strategy)
            config = training.with_run_length(config, steps_per_epoch)
            self._prepared = (config, resolved_space, info, steps_per_epoch)
        return self._prepared

    def config_for(self, values):
        """The resolved `TrainConfig` of a trial's hyperparameter values (`hp.values`)."""
        config, _, _, _ = self.prepare()
        return space_module.config_for(config, values)

    def hyperparameters(self, values=None):
        """The space as a `keras_tuner.HyperParameters`, set to `values`.

        Args:
            values: `{name: value}` of some or all of the space's hyperparameters, e.g.
                the `best_hyperparameters` of `tuning_results.json`; the others keep
                their defaults. Keys outside the space (Hyperband's "tuner/...") are
                ignored.

        Returns:
            A `keras_tuner.HyperParameters` for `build` and `fit`.

        Raises:
            ValueError: a value outside the space.
        """
        _, resolved_space, _, _ = self.prepare()
        hp = keras_tuner.HyperParameters()
        resolved_space.declare(hp)
        for name, value in (values or {}).items():
            if name in space_module.FIELDS:
                hp.values[name] = value
        if not resolved_space.contains(hp.values):
            expected = f"Expected values inside the search space {resolved_space.to_dict()}"
            raise validation.error("values", values, expected)
        return hp

    def declare_hyperparameters(self, hp):
        _, resolved_space, _, _ = self.prepare()
        resolved_space.declare(hp)

    def build(self, hp):
        _, resolved_space, info, steps_per_epoch = self.prepare()
        resolved_space.declare(hp)
        config = self.config_for(hp.values)
        with distribute.dtype_policy(config.mixed_precision):
            # The same initial weights and data order for every trial with a seed.
            keras.utils.set_random_seed(config.seed)
            model = training.build_model(config, info)
            training.compile_model(model, config, steps_per_epoch, self.strategy)
        return model

    def fit(self, hp, model, *args, **kwargs):
        """Trains `model` (from `build(hp)`) with the trial's recipe and data.

        Args:
            hp: the trial's `keras_tuner.HyperParameters`.
            model: the compiled model `build(hp)` returned.
            *args: positional arguments of `Model.fit`; without them the model trains on
                the configuration's training pipeline.
            **kwargs: forwarded to `Model.fit`. `epochs` defaults to the configuration's
                (Hyperband sets it and `initial_epoch`), `validation_data` to the
                validation pipeline, `verbose` to the configuration's. The tuner's
                `callbacks` run after `keras.callbacks.SwapEMAWeights`, so that the
                best epoch's checkpoint holds the EMA weights that were evaluated.

        Returns:
            The `History` of `Model.fit`.
        """
        config = self.config_for(hp.values)
        _, _, info, _ = self.prepare()
        train_data, test_data, _ = training.make_datasets(config, info, self.strategy)
        callbacks = list(kwargs.pop("callbacks", None) or [])
        if recipe.uses_ema(model.optimizer):  # LossScaleOptimizer's inner one too
            callbacks.insert(0, keras.callbacks.SwapEMAWeights(swap_on_epoch=True))
        # A trial whose loss is NaN or infinite fails, rather than scoring a diverged model.
        callbacks.insert(0, run_callbacks.StopOnNonFiniteLoss())
        kwargs.setdefault("epochs", config.epochs)
        kwargs.setdefault("validation_data", test_data)
        kwargs.setdefault("verbose", fit_verbosity(config.verbose))
        kwargs.setdefault("shuffle", False)  # The pipeline shuffles.
        if not kwargs.get("initial_epoch") and distribute.single_device(self.strategy):
            # A model that Hyperband continues (initial_epoch > 0) has loaded its
            # statistics with its weights.
            recipe.initialize_batch_norm_statistics(model, first_images(config, info))
        if not args and "x" not in kwargs:
            args = (train_data,)
        return model.fit(*args, callbacks=callbacks, **kwargs)
