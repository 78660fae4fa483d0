"""The from-scratch labs: hand-written gradients (Lab 1 part 1), autograd on toy 2-D data
(Lab 1 part 2) and a NumPy backprop classifier (Homework 05 parts 1-2)."""
