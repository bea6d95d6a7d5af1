# A small model in about a minute on a 2-core CPU (73 s in docs/bench/train.txt): val loss below 1.88.
# python train.py config/train_quick.py
# Compared with nanoGPT's CPU recipe (4 layers of 128, batch 12, lr 1e-3, 2000 iterations):
# wider and shallower, a larger batch, a 6x higher learning rate decayed to zero, shorter Adam memory.
ckpt_path = "out/quick.pt"
n_layer = 2
n_head = 6
n_embd = 192
block_size = 64
batch_size = 16
max_iters = 750
learning_rate = 6e-3
min_lr = 0.0
warmup_iters = 50
beta1 = 0.8
beta2 = 0.95
eval_interval = 250
eval_iters = 20
log_interval = 50
