# A small model in about a minute on a 2-core CPU (50 s in docs/bench/train.txt): val loss below 1.88.
# python train.py config/train_quick.py
# Compared with nanoGPT's CPU recipe (4 layers of 128, batch 12, lr 1e-3, 2000 iterations):
# wider and shallower, a larger batch, a 6x higher learning rate decayed to zero, shorter Adam memory.
ckpt_path = "out/quick.pt"
n_layer = 2
n_head = 6
n_embd = 192
block_size = 64
batch_size = 8  # blocks per micro-batch: two of them make the global batch of 16
gradient_accumulation_steps = 2  # so that torchrun --nproc_per_node=2 runs this file as it is
max_iters = 750
learning_rate = 6e-3
min_lr = 0.0
warmup_iters = 50
beta1 = 0.8
beta2 = 0.95
eval_interval = 250
eval_iters = 40  # 40 batches of 8: the same 320 windows as 20 of 16
log_interval = 50
