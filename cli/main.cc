// The orrery executable: turns flags into the chosen role's object graph.
#include <iostream>
int main() { std::cout << "orrery\n"; return 0; }
