"""recbole-pcl: prompt-based continual learning (PCL) for user modelling, as a RecBole plugin.

Importing it changes nothing outside it: RecBole's adaptations to today's numpy, pandas, scipy and
torch live in our subclasses or are applied by our entry points while they run (:mod:`.compat`).
"""

from recbole_pcl.compat import import_recbole_models

import_recbole_models()  # before any of our models import RecBole's; torch's anomaly mode is kept

from recbole_pcl import evaluator  # noqa: E402, F401  registers Accuracy with RecBole's evaluator

__version__ = "0.1.0"
