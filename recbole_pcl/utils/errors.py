class PCLError(Exception):
    """A problem with the user's input (model, dataset, file, column, task or config key).

    Its message names the thing at fault; ``run_recbole_pcl.py`` prints it as one line and exits 2.
    """
