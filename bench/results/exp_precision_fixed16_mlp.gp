# Run from bench/results: gnuplot exp_precision_fixed16_mlp.gp
set terminal pngcairo size 1000,650 font 'DejaVu Sans,11'
set output 'exp_precision_fixed16_mlp.png'
set title 'Fashion-MNIST: float32 vs 16-bit fixed point (solid: stochastic, dashed: nearest, dotted: nearest updates only)'
set xlabel 'epoch'
set ylabel 'test accuracy (%)'
set key outside right
set grid
$s0 << EOD
1 83.20
2 85.51
3 86.31
4 87.03
5 87.40
6 87.92
7 87.91
8 87.89
9 88.01
10 88.39
EOD
$s1 << EOD
1 82.95
2 85.42
3 86.45
4 87.20
5 86.98
6 88.07
7 87.51
8 87.97
9 87.85
10 88.21
EOD
$s2 << EOD
1 82.08
2 85.02
3 86.22
4 86.82
5 87.07
6 88.13
7 87.88
8 87.98
9 88.11
10 88.31
EOD
$s3 << EOD
1 83.33
2 84.80
3 86.21
4 87.06
5 87.02
6 87.58
7 87.61
8 87.93
9 87.23
10 88.66
EOD
$s4 << EOD
1 81.12
2 84.13
3 84.32
4 85.80
5 85.91
6 85.84
7 86.19
8 86.54
9 86.19
10 86.75
EOD
$s5 << EOD
1 83.09
2 85.02
3 85.94
4 86.72
5 86.72
6 87.95
7 87.72
8 87.79
9 87.86
10 88.58
EOD
$s6 << EOD
1 82.33
2 84.91
3 85.98
4 20.84
5 10.00
6 10.00
7 10.00
8 10.00
9 10.00
10 10.00
EOD
$s7 << EOD
1 22.13
2 18.86
3 15.31
4 12.42
5 16.10
6 10.00
7 19.53
8 14.47
9 26.51
10 12.08
EOD
$s8 << EOD
1 10.00
2 10.00
3 10.00
4 10.00
5 10.00
6 10.00
7 10.00
8 10.00
9 10.00
10 10.00
EOD
$s9 << EOD
1 79.63
2 83.69
3 84.70
4 85.13
5 85.32
6 85.81
7 85.05
8 85.72
9 85.62
10 86.70
EOD
$s10 << EOD
1 76.28
2 80.41
3 79.43
4 81.94
5 82.43
6 82.82
7 81.63
8 83.10
9 82.72
10 83.30
EOD
plot $s0 using 1:2 with linespoints lw 3 lc rgb 'black' title 'float32', \
     $s1 using 1:2 with linespoints lw 2 dt 1 title 'fixed16 FL=14 stochastic', \
     $s2 using 1:2 with linespoints lw 2 dt 1 title 'fixed16 FL=12 stochastic', \
     $s3 using 1:2 with linespoints lw 2 dt 1 title 'fixed16 FL=10 stochastic', \
     $s4 using 1:2 with linespoints lw 2 dt 1 title 'fixed16 FL=8 stochastic', \
     $s5 using 1:2 with linespoints lw 2 dt 2 title 'fixed16 FL=14 nearest', \
     $s6 using 1:2 with linespoints lw 2 dt 2 title 'fixed16 FL=12 nearest', \
     $s7 using 1:2 with linespoints lw 2 dt 2 title 'fixed16 FL=10 nearest', \
     $s8 using 1:2 with linespoints lw 2 dt 2 title 'fixed16 FL=8 nearest', \
     $s9 using 1:2 with linespoints lw 2 dt 3 title 'fixed16 FL=10 nearest updates only', \
     $s10 using 1:2 with linespoints lw 2 dt 3 title 'fixed16 FL=8 nearest updates only'
