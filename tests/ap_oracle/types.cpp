// Result types of + - * / for the generated operand pairs in "type_pairs.h":
//   P(id, W1, I1, S1, W2, I2, S2)
#include "oracle.h"

void oracle_print_all_types() {
#define P(ID, W1, I1, S1, W2, I2, S2) oracle_types<W1, I1, S1, W2, I2, S2>(ID);
#include "type_pairs.h"
#undef P
}
