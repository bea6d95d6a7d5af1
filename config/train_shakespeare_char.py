# The recipe of the shipped model: 2.7M parameters, trained on a 2-core CPU in about 42 minutes.
# python train.py config/train_shakespeare_char.py
# It writes out/, so the shipped checkpoints/shakespeare_char.pt stays as it is; sample from yours with
# python sample.py --ckpt out/shakespeare_char.pt
ckpt_path = "out/shakespeare_char.pt"
save_optimizer = False  # ships the weights only (11 MB instead of 32 MB)
n_layer = 6
n_head = 6
n_embd = 192
block_size = 128
dropout = 0.0
batch_size = 32
max_iters = 2600
learning_rate = 2.5e-3
min_lr = 2.5e-4
warmup_iters = 200
eval_interval = 500
eval_iters = 20
log_interval = 100
