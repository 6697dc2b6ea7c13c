"""The smallest anomaly configuration the app tests train: 3 channels, a window of 16, one layer of
each kind and 4 steps (seconds on a CPU)."""

TINY = [
    "data.channels=3",
    "data.n_train=300",
    "data.n_val=120",
    "data.n_test=300",
    "data.train_stride=8",
    "model.window=16",
    "model.d_model=16",
    "model.n_heads=2",
    "model.n_layers=1",
    "model.d_ff=16",
    "model.mamba_layers=1",
    "model.d_state=4",
    "train.max_steps=4",
    "train.batch_size=8",
    "train.log_every=2",
    "score.hop=4",
    "score.lag=6",
]
