# plot.gp: bench/cluster.sh's PNG — aggregate decode tokens/s against concurrent sequences.
# Left: one process and 1..3 stages on loopback; right (when nsdat is given): the netns
# profiles. Data files: whitespace columns, first line = column titles, column 1 = sequences,
# "?" = not measured. Not here: measuring (cluster.sh writes the data).
#   gnuplot -e "dat='loop.dat'; ncol=5; nsdat='ns.dat'; nscol=7; single=282.3; \
#               title='small, 1 thread'; out='cluster.png'" bench/plot.gp
if (!exists("dat")) dat = 'loop.dat'
if (!exists("ncol")) ncol = 5
if (!exists("nsdat")) nsdat = ''
if (!exists("nscol")) nscol = 0
if (!exists("single")) single = 0
if (!exists("title")) title = ''
if (!exists("out")) out = 'cluster.png'

set terminal pngcairo size (nsdat eq '' ? 900 : 1600), 600 font ',11' noenhanced
set output out
set datafile missing '?'
set key top left box opaque
set grid
set logscale x 2
set xlabel 'concurrent sequences'
set ylabel 'aggregate decode tokens/s'
set yrange [0:*]
set xrange [0.8:*]

if (nsdat ne '') set multiplot layout 1,2 title title
if (nsdat eq '') set title title

set title 'loopback: stages = worker processes'
plot for [i=2:ncol] dat using 1:i with linespoints lw 2 pt 7 title columnheader(i), \
     single with lines dt 2 lc rgb 'black' title sprintf('one process, 1 sequence: %.1f t/s', single)

if (nsdat ne '') {
    set title 'netns home lab (tbf + tern-delay-relay)'
    plot for [i=2:nscol] nsdat using 1:i with linespoints lw 2 pt 7 title columnheader(i), \
         single with lines dt 2 lc rgb 'black' title 'one process, 1 sequence'
    unset multiplot
}
