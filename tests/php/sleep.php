<?php
// Sleeps ?s= seconds (default 3) before answering.
echo "before\n";
flush();
usleep(intval(floatval($_GET['s'] ?? 3) * 1000000));
echo "after\n";
