"""The smallest anomaly configuration the app tests train: 3 channels, a window of 16, one layer of
each kind and 4 steps (seconds on a CPU)."""

# The smallest network: one attention layer and one Mamba block of width 16.
TINY_MODEL = [
    "model.d_model=16",
    "model.n_heads=2",
    "model.n_layers=1",
    "model.d_ff=16",
    "model.mamba_layers=1",
    "model.d_state=4",
]

TINY = [
    "data.channels=3",
    "data.n_train=300",
    "data.n_val=120",
    "data.n_test=300",
    "data.train_stride=8",
    "model.window=16",
    *TINY_MODEL,
    "train.max_steps=4",
    "train.batch_size=8",
    "train.log_every=2",
    "score.hop=4",
    "score.lag=6",
]
