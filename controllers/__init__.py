"""Controllers that tune a latent vector from cost values alone (numpy only).

Never imports ``latenttune`` (DESIGN.md section 1).
"""
