# Run from bench/results: gnuplot exp_precision_fixed16_cnn.gp
set terminal pngcairo size 1000,650 font 'DejaVu Sans,11'
set output 'exp_precision_fixed16_cnn.png'
set title 'Fashion-MNIST: float32 vs 16-bit fixed point (solid: stochastic, dashed: nearest, dotted: nearest updates only)'
set xlabel 'epoch'
set ylabel 'test accuracy (%)'
set key outside right
set grid
$s0 << EOD
1 83.08
2 87.19
3 88.05
EOD
$s1 << EOD
1 82.71
2 87.38
3 88.55
EOD
$s2 << EOD
1 82.88
2 87.33
3 88.07
EOD
$s3 << EOD
1 82.49
2 86.73
3 87.78
EOD
$s4 << EOD
1 82.13
2 85.85
3 86.04
EOD
$s5 << EOD
1 83.98
2 87.64
3 87.79
EOD
$s6 << EOD
1 83.05
2 86.33
3 88.00
EOD
$s7 << EOD
1 82.16
2 10.00
3 10.00
EOD
$s8 << EOD
1 10.00
2 10.00
3 10.00
EOD
plot $s0 using 1:2 with linespoints lw 3 lc rgb 'black' title 'float32', \
     $s1 using 1:2 with linespoints lw 2 dt 1 title 'fixed16 FL=14 stochastic', \
     $s2 using 1:2 with linespoints lw 2 dt 1 title 'fixed16 FL=12 stochastic', \
     $s3 using 1:2 with linespoints lw 2 dt 1 title 'fixed16 FL=10 stochastic', \
     $s4 using 1:2 with linespoints lw 2 dt 1 title 'fixed16 FL=8 stochastic', \
     $s5 using 1:2 with linespoints lw 2 dt 2 title 'fixed16 FL=14 nearest', \
     $s6 using 1:2 with linespoints lw 2 dt 2 title 'fixed16 FL=12 nearest', \
     $s7 using 1:2 with linespoints lw 2 dt 2 title 'fixed16 FL=10 nearest', \
     $s8 using 1:2 with linespoints lw 2 dt 2 title 'fixed16 FL=8 nearest'
