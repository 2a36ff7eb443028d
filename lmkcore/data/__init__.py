"""Data: dataset records, file formats, image I/O and the decoded-image cache, dataset loaders
(:mod:`lmkcore.data.datasets`) and the torch dataset that feeds the networks."""
