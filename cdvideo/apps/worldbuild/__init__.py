"""The miniature world's build (`python -m cdvideo.apps.worldbuild`) and its studies: every shipped weight of
`model: toyworld` rebuilt from a seed, one stage per module (judge, text, vae, unet, motion, export, report), each
run from its plan (plans.py); the SPL studies (spl_ablation, spl_strength, tune) and motion_signal beside them,
each `python -m cdvideo.apps.worldbuild.<name>`."""
