"""What several roles share: the stacked networks, the behaviour distribution the actor samples and the learner
corrects for, GAE and the PPO loss pieces. Imports only `magicmask.protocol`."""
