"""Training with `accelerate`: the paper's recipe, on one process or many.

    accelerate launch scripts/train.py --config configs/ptb-char-small.yaml \\
        --data-dir data/ptb --output-dir runs/ptb-char-small [train.max_epochs=2 ...]

How the text is fed (truncated backpropagation through time). The training split is one long
stream of word ids. It is cut into R = batch_size x num_processes rows of equal length::

    stream: a b c d e f g h i j k l m n o p q r s t u v w x     (R = 4 rows)
    row 0:  a b c d e f      <- process 0 owns rows 0-1
    row 1:  g h i j k l
    row 2:  m n o p q r      <- process 1 owns rows 2-3
    row 3:  s t u v w x

Step k feeds columns [k*T, (k+1)*T) of its rows, so row r of step k+1 continues the text of row r
of step k, and the LSTM state at the end of step k is the right state to start step k+1 from: it is
carried over (detached, so gradients stop at the chunk boundary). Each process owns a fixed block of
rows and the gradients are averaged across processes, so N processes with batch B compute the same
update as one process with batch N*B. We batch the stream ourselves: a DataLoader prepared by
accelerate would shard and reshuffle it.

Interruptions. A resumable state (model, optimizer, RNG states, LSTM state, progress) is saved every
``train.checkpoint_every_steps`` updates and at the end of each epoch: written to
``checkpoints/step-N.tmp``, marked ``COMPLETE``, then renamed, so a crash or a SIGKILL at any moment
leaves the newest complete state intact, and ``--resume`` continues from it to the same weights as an
uninterrupted run. SIGINT or SIGTERM stops after the current update, saves, and exits with status
130 or 143; with several processes, an error or a kill on one of them stops the others within
seconds, without saving (:class:`charlm.runtime.StopRequest`). A NaN or infinite loss stops the run
before anything is saved or exported.

Threads and precision (:mod:`charlm.runtime`): each process uses the cores available to it divided
among the processes on the machine (``train.num_threads`` to choose), whatever the launcher set in
``OMP_NUM_THREADS``; ``train.mixed_precision=auto`` times a training step in fp32 and in bf16 (fp16 on
a GPU without bf16) on the device itself and takes the faster (:mod:`charlm.runtime.precision`).
"""

from charlm.train.loop import add_arguments, run, train
from charlm.train.processes import STOP_CHECK_EVERY
from charlm.train.recipe import sequence_loss, should_decay
from charlm.train.trainer import Run

__all__ = ["STOP_CHECK_EVERY", "Run", "add_arguments", "run", "sequence_loss", "should_decay", "train"]
