# The draft model for speculative sampling, trained on the same 65 characters: one layer, so
# that a step costs a fraction of a step of the shipped model's six.
# python train.py config/train_draft.py, then python sample.py --draft out/draft.pt
ckpt_path = "out/draft.pt"
save_optimizer = False  # weights only: the shipped checkpoints/draft.pt is this file
n_layer = 1
n_head = 6
n_embd = 192
block_size = 128
batch_size = 32
max_iters = 2000
learning_rate = 3e-3
min_lr = 0.0
warmup_iters = 100
beta1 = 0.8
beta2 = 0.95
eval_interval = 500
eval_iters = 20
log_interval = 100
