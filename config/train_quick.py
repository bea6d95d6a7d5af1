# A small model in about a minute on a laptop CPU: val loss about 1.85.
# python train.py config/train_quick.py
ckpt_path = "out/quick.pt"
n_layer = 4
n_head = 4
n_embd = 128
block_size = 64
batch_size = 32
max_iters = 400
learning_rate = 3e-3
min_lr = 3e-4
warmup_iters = 40
eval_interval = 100
eval_iters = 20
log_interval = 50
