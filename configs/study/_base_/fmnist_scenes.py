# What the dense study's segmentation and detection configs share: the
# scenes, the study encoder at 64x64 and the schedule length
# (docs/results.md, "Dense transfer"). Scenes: 64x64 canvases of 2-4
# Fashion-MNIST items (tools/dataset_converters/fmnist_scenes.py).
scenes_root = 'data/fmnist_scenes'
scenes_test_annotations = 'data/fmnist_scenes/annotations/instances_test.json'
img_size = 64
# the classification study's encoder has patch 4, so 64x64 scenes give a
# 16x16 token grid; the 8x8 position embeddings of the 32x32 pretraining are
# resized when the encoder loads
patch_size = 4
# Fashion-MNIST's pixel mean and std, as the pretraining normalised
mean = [72.94, 72.94, 72.94]
std = [90.02, 90.02, 90.02]
# the encoder to start from: the classification study's MixedAE seed 0
# (python tools/analysis_tools/ablation_study.py --out docs/results); the
# dense study tool (tools/analysis_tools/dense_study.py) sets each arm's
# checkpoint, and model.backbone.init_cfg=None for the scratch arm
encoder_checkpoint = 'docs/results/runs/mixedae_seed0/pretrain/iter_2808.pth'
