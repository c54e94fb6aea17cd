# A computation long enough to be checkpointed in the middle; prints one
# RESULT line that any uninterrupted run reproduces.
use strict;
use warnings;
$| = 1;
print "READY $$\n";
my $x = 1;
my %seen;
for my $i (1 .. 6_000_000) {
    $x = ($x * 1103515245 + 12345) % 2147483648;
    $seen{ $i % 4096 } = $x;
}
print "RESULT $x ", scalar(keys %seen), "\n";
